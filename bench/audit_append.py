"""Decision-log append throughput and latency with durability on (fsync group commit).

Each case opens a fresh :class:`~tiermesh.agents.decisionlog.DecisionLog` in a temporary
directory (on the file system of ``--dir``, default the system temp dir) and runs
``appenders`` concurrent tasks that append realistic request records (masked input with a
body, findings and a token estimate; signed with an EC P-256 SVID key). An append returns
only after its record is written and fdatasync-ed. A case stops after ``--count`` records
or ``--seconds``, whichever comes first.

Reports records/s and per-append latency p50/p99 (from the call to its return), plus how
many fsyncs the group commit needed. Writes a markdown table to ``bench/results/audit.md``
(``--out`` elsewhere, e.g. to compare with another checkout).

    .venv/bin/python bench/audit_append.py [--count 20000] [--seconds 5] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cryptography
from cryptography.hazmat.primitives.asymmetric import ec

from tiermesh.agents.decisionlog import DecisionEntry, DecisionLog, SigningIdentity, StaticSigner
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority

RESULTS = Path(__file__).with_name("results") / "audit.md"
CASES = ((1, 0.0), (1, 2.0), (16, 0.0), (16, 2.0), (64, 0.0), (64, 2.0), (256, 0.0), (256, 2.0))


def identity() -> SigningIdentity:
    ca = LocalCertificateAuthority.create(CaConfig("bench.example"))
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue_for_key(key.public_key(), "edge-1")
    return SigningIdentity(issued.spiffe_id, key, issued.chain)


def request(index: int) -> DecisionEntry:
    data: dict[str, Any] = {
        "tenant": "acme",
        "body": "Summarise the attached quarterly report for the board. " * 8,
        "messages": [{"role": "user", "content": "secret"}],
        "findings": [{"detector": "email", "count": index % 2}],
        "token_estimate": 420,
        "headers": {"x-tiermesh-task": "chat", "x-tiermesh-model": "small"},
    }
    return DecisionEntry(
        path="tiermesh/request/decision",
        input=data,
        result={"allow": True, "tier": "local", "backend": "edge-smollm"},
        timers={"timer_rego_query_eval_ns": 41_000},
        bundle_revision="sha256:0f1e2d",
        etcd_revision=1234,
        snapshot_version="v42",
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_case(
    directory: Path,
    signer: StaticSigner,
    appenders: int,
    batch_ms: float,
    count: int,
    seconds: float,
) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    budget = count
    async with DecisionLog(directory, signer, fsync_batch_ms=batch_ms) as log:

        async def appender() -> None:
            nonlocal budget
            index = 0
            while budget > 0 and time.perf_counter() < deadline:
                budget -= 1
                index += 1
                start = time.perf_counter()
                await log.append(request(index))
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(appender() for _ in range(appenders)))
        elapsed = time.perf_counter() - started
        writes = log.commits
    return {
        "records": len(latencies),
        "elapsed": elapsed,
        "rate": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "writes": writes,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    signer = StaticSigner(identity())
    rows = []
    for appenders, batch_ms in CASES:
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            result = await run_case(
                Path(folder), signer, appenders, batch_ms, args.count, args.seconds
            )
        rows.append((appenders, batch_ms, result))
        print(appenders, batch_ms, {k: round(v, 3) for k, v in result.items()})
    lines = [
        "# Decision log: durable append",
        "",
        f"`bench/audit_append.py --count {args.count} --seconds {args.seconds}`; spool on "
        f"`{args.dir}`; every append waits for its fdatasync (group commit).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, cryptography "
        f"{cryptography.__version__}. One event loop; writes on one worker thread.",
        "",
        "| appenders | fsync_batch_ms | records | records/s | p50 ms | p99 ms | records/fsync |",
        "|---|---|---|---|---|---|---|",
    ]
    for appenders, batch_ms, r in rows:
        lines.append(
            f"| {appenders} | {batch_ms:g} | {int(r['records']):,} | {r['rate']:,.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['records'] / max(1, r['writes']):.1f} |"
        )
    lines += [
        "",
        "The event loop only queues each append (signer identity, clock, a future); the",
        "writer thread masks, hashes and ECDSA-signs the whole batch (~40 us of CPU a record)",
        "right before its single write and fdatasync. Under the GIL that CPU is not spent in",
        "parallel with the loop's Python code, so this bench (a loop that does nothing but",
        "append) shows no gain from it; what it buys is a loop that is never held by signing.",
        "``fsync_batch_ms`` adds a wait for more records once concurrency was seen (a lone",
        "appender never waits); the 0 and 2 ms rows side by side are what its default (0) is",
        "chosen from: at 16 and 64 appenders the window halves or cuts the rate by a quarter,",
        "because batches already grow with concurrency while the previous fsync runs.",
        "",
    ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
