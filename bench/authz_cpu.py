"""CPU per ext_authz decision, side by side: the authz server of other source trees and
of this one with and without the decision cache, each alone in its own process.

Each server (shipped request policy on regorus, durable decision log in a temp dir,
``StaticSigner``) runs in a child process started from a source tree (``--tree NAME=PATH``;
this tree is always there as ``cache on`` and ``cache off``). This process sends
``Check`` calls with the benchmark's chat body (one email) to one server at a time: one
round is ``--count`` calls to each server in turn at concurrency ``--concurrency``, for
``--rounds`` rounds (each server first in turn), so every server sees the same machine
noise. For each server: the
server process's CPU time (user + system, every thread: gRPC, event loop, the decision
log's writer) per call, and the calls' p50/p90/p99 latency (the client's side of the
gRPC call; no Envoy) and calls/s. Medians over rounds; CPU also as min-max.

With ``--noop``, a server that answers OK without deciding or recording runs beside
them: what the gRPC server alone costs.

    .venv/bin/python bench/authz_cpu.py [--tree before=/path/to/main] [--count 1000]
        [--rounds 5] [--concurrency 1] [--noop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def serve(spool: Path, cache: bool) -> None:
    """Run one authz server from the tree on ``sys.path`` until stdin closes; print its
    port. Uses only what every tree compared has (``modules`` only with the cache)."""
    from tests.unit.decisionlog.helpers import identity_for, new_ca  # noqa: PLC0415

    from tiermesh.agents.authz import (  # noqa: PLC0415
        Authorizer,
        BudgetState,
        DecisionLogSink,
        StaticBudgetSource,
        load_request_policy,
        request_policy_modules,
        start_authz_server,
    )
    from tiermesh.agents.decisionlog import DecisionLog, StaticSigner  # noqa: PLC0415
    from tiermesh.rego import RegorusEngine  # noqa: PLC0415

    policy = Path.cwd() / "policies" / "request"

    async def run() -> None:
        engine = RegorusEngine()
        load_request_policy(engine, policy, {"request_config": {"max_request_tokens": 10_000}})
        log = DecisionLog(spool, StaticSigner(identity_for(new_ca())))
        await log.start()
        extra: dict[str, Any] = {"modules": request_policy_modules(policy)} if cache else {}
        budget = StaticBudgetSource({"acme": BudgetState.of(1, 100)})
        authorizer = Authorizer(engine, DecisionLogSink(log), budget, **extra)
        server, port = await start_authz_server(authorizer)
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop(None)
        await log.close()
        engine.close()

    asyncio.run(run())


def serve_noop() -> None:
    """A ``Check`` server on ``grpc.aio`` that answers OK without deciding or recording:
    the floor the gRPC server itself puts under every decision."""
    import grpc  # noqa: PLC0415
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc  # noqa: PLC0415
    from google.rpc import code_pb2, status_pb2  # noqa: PLC0415

    answer = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))

    class Noop(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
        async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802
            return answer

    async def run() -> None:
        server = grpc.aio.server()
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Noop(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop(None)

    asyncio.run(run())


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _calls(port: int, count: int, concurrency: int) -> tuple[list[float], float]:
    import grpc  # noqa: PLC0415
    from envoy.service.auth.v3 import external_auth_pb2_grpc  # noqa: PLC0415

    sys.path.insert(0, str(ROOT / "bench"))
    from ext_authz import check_request  # noqa: PLC0415

    request = check_request()
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        await stub.Check(request, timeout=5)

        async def worker(calls: int) -> None:
            for _ in range(calls):
                started = time.perf_counter()
                await stub.Check(request, timeout=5)
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return latencies, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a tree")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--noop", action="store_true", help="add a server that only says OK")
    args = parser.parse_args()
    if args.serve is not None and args.noop:
        serve_noop()
        return
    if args.serve is not None:
        sys.path[:0] = [str(Path.cwd() / "src"), str(Path.cwd())]
        serve(args.serve, args.cache)
        return
    servers: list[tuple[str, Path, bool | None]] = [
        (name, Path(path), False) for name, path in (t.split("=", 1) for t in args.tree)
    ]
    servers += [("this tree, cache off", ROOT, False), ("this tree, cache on", ROOT, True)]
    if args.noop:
        servers.append(("gRPC only: answers OK, no decision, no record", ROOT, None))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in servers}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tiermesh-authz-cpu-") as tmp:
        children: list[tuple[str, subprocess.Popen[bytes], int]] = []
        try:
            for index, (name, tree, cache) in enumerate(servers):
                command = [sys.executable, __file__, "--serve", f"{tmp}/spool-{index}"]
                env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree}"}
                flags = ["--noop"] if cache is None else ["--cache"] if cache else []
                child = subprocess.Popen(
                    [*command, *flags],
                    cwd=tree,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                assert child.stdout is not None
                children.append((name, child, int(child.stdout.readline())))
            for round_index in range(args.rounds):
                first = round_index % len(children)  # each server leads a round in turn
                for name, child, port in children[first:] + children[:first]:
                    user, system = _cpu_seconds(child.pid)
                    latencies, elapsed = asyncio.run(_calls(port, args.count, args.concurrency))
                    user_after, system_after = _cpu_seconds(child.pid)
                    calls = len(latencies)
                    results[name].append(
                        {
                            "cpu_us": 1e6 * (user_after - user + system_after - system) / calls,
                            "user_us": 1e6 * (user_after - user) / calls,
                            "per_s": len(latencies) / elapsed,
                            "p50": 1000 * statistics.median(latencies),
                            "p90": 1000 * _pct(latencies, 0.90),
                            "p99": 1000 * _pct(latencies, 0.99),
                        }
                    )
        finally:
            for _, child, _ in children:
                if child.stdin is not None:
                    child.stdin.close()
            for _, child, _ in children:
                child.wait(timeout=30)
    load_after = os.getloadavg()
    print(
        f"{args.rounds} rounds x {args.count} calls per server, concurrency "
        f"{args.concurrency}; load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f}"
    )
    print()
    print(
        "| server | CPU us per call (median, min-max) | of it user | calls/s | p50 / p90 / p99 ms |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        cpu = [r["cpu_us"] for r in rows]

        def med(key: str, rows: list[dict[str, float]] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        print(
            f"| {name} | {statistics.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f}) "
            f"| {med('user_us'):.0f} | {med('per_s'):.0f} "
            f"| {med('p50'):.2f} / {med('p90'):.2f} / {med('p99'):.2f} |"
        )


if __name__ == "__main__":
    main()
