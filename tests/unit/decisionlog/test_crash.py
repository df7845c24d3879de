"""kill -9 during appends: every record whose append returned survives, the chain verifies."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.unit.decisionlog.helpers import entry, identity_for, new_ca
from tiermesh.agents.decisionlog import DecisionLog, StaticSigner, load_signers, read_spool, verify
from tiermesh.controlplane.audit import verify_chain

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[3]
UUID_LINE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ROUNDS = 6
ROUND_TIMEOUT_S = 10.0


def run_and_kill(spool: Path, key: Path, chain: Path, rng: random.Random) -> set[str]:
    """Start the child, let it append for a random moment, SIGKILL it; the ids it printed."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}/src{os.pathsep}{ROOT}"}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(spool), str(key), str(chain)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    try:
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        assert time.monotonic() < deadline
        os.kill(child.pid, signal.SIGKILL)
        output = child.stdout.read()
    finally:
        child.kill()
        child.wait(timeout=ROUND_TIMEOUT_S)
        child.stdout.close()
    lines = output.decode().split("\n")
    # The last piece is unterminated (cut by the kill) or empty: either way not an id.
    return {line for line in lines[:-1] if UUID_LINE.match(line)}


async def test_records_acknowledged_before_a_kill_survive(tmp_path: Path) -> None:
    ca = new_ca()
    identity = identity_for(ca)
    key_file, chain_file = tmp_path / "key.pem", tmp_path / "chain.pem"
    key_file.write_bytes(
        identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    chain_file.write_text(identity.chain_pem())
    spool = tmp_path / "spool"
    rng = random.Random(20260101)
    acknowledged: set[str] = set()
    for _ in range(ROUNDS):
        acknowledged |= run_and_kill(spool, key_file, chain_file, rng)
    assert len(acknowledged) > 100

    async with DecisionLog(spool, StaticSigner(identity)) as log:
        assert log.quarantined == ()
        after = await log.append(entry(0))
    spooled = list(read_spool(spool))
    present = {str(item.record.decision_id) for item in spooled}
    assert acknowledged <= present
    assert spooled[-1].record.seq == after.seq == len(spooled) - 1
    assert verify_chain([item.record for item in spooled]) is None
    signers = load_signers(spool)
    bundle = ca.bundle().to_pem()
    for item in spooled[:: max(1, len(spooled) // 50)]:
        verify(item.record, signers[item.signer], bundle)
