"""Child process for the crash test: append forever, print each decision id once durable.

argv: spool directory, key PEM file, chain PEM file. Killed with SIGKILL by the test.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tiermesh.agents.decisionlog import DecisionEntry, DecisionLog, SigningIdentity, StaticSigner


async def appender(log: DecisionLog, worker: int) -> None:
    for index in range(1_000_000):
        item = DecisionEntry(
            path="tiermesh/request/decision",
            input={"tenant": "acme", "worker": worker, "index": index, "pad": "x" * 200},
            result={"allow": True, "tier": "local"},
        )
        record = await log.append(item)
        sys.stdout.write(f"{record.decision_id}\n")
        sys.stdout.flush()


async def main() -> None:
    spool, key_file, chain_file = (Path(arg) for arg in sys.argv[1:4])
    key = load_pem_private_key(key_file.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    chain = tuple(x509.load_pem_x509_certificates(chain_file.read_bytes()))
    identity = SigningIdentity("spiffe://mesh.example/node/edge-1", key, chain)
    async with DecisionLog(spool, StaticSigner(identity), segment_bytes=64 * 1024) as log:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.gather(*(appender(log, worker) for worker in range(8)))


if __name__ == "__main__":
    asyncio.run(main())
