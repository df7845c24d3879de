"""ext_authz: decisions/s over direct gRPC Check calls, and the latency Envoy adds with it.

Two authz servers run side by side, the same but for the decision cache (``cache off``:
every request evaluated by regorus; ``cache on``: the policy's answer memoized on the
input parts it reads, as a node runs it). The benchmark's body is the same on every
request, so with the cache on every request after the first is a hit; the hit count is
reported.

1. **Direct**: each authz server (shipped request policy on regorus, durable decision log
   with fsync group commit, in a temp dir) answers ``Check`` calls from ``concurrency``
   client tasks in this process, with a realistic chat body (one email in it, so the
   detectors find something), alternating between the two servers in ``--rounds``
   rounds. Reports decisions/s (median round) and per-call p50/p99 (all rounds).
2. **Through Envoy**: three real Envoys with the same compiled plan and the same backends;
   one app listener without the ext_authz filter (the compiled route alone) and one with
   it per authz server. Requests go to each in turn, one at a time over keep-alive
   connections, so all see the same machine noise; the *added* latency is the difference
   of the distributions' percentiles. This runs ``--rounds`` times; the headline is the
   median over rounds (a p99 of a few thousand samples on a shared VM moves by
   milliseconds).
3. **Disk**: p50/p99 of a bare ``write`` + ``fdatasync`` of one record-sized line in the
   spool's directory, before and after the Envoy rounds: a durable answer cannot be
   faster than that, and on a shared VM it is the noisiest part.

The backends set ``TCP_NODELAY`` on their connections (see :func:`nodelay_backends`):
without it every keep-alive answer of ``http.server`` (headers and body in two writes)
stalls ~40 ms on Nagle + Envoy's delayed ACK, whichever listener it goes through.

Bounded by ``--count`` and ``--seconds`` per case. Writes ``bench/results/ext_authz.md``;
the notes after :data:`NOTES_MARKER` in it are kept.
``bench/edge_path.py`` (+ usage accounting) reuses the Envoy, request and percentile
helpers here.

    .venv/bin/python bench/ext_authz.py [--count 2000] [--seconds 20] [--rounds 3]
        [--results PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from envoy.service.auth.v3 import (  # noqa: E402
    attribute_context_pb2,
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from tests.integration.authz.harness import AuthzThread  # noqa: E402
from tests.integration.compiler import tierbackend  # noqa: E402
from tests.integration.compiler.conftest import NODE, small_catalog  # noqa: E402
from tests.integration.compiler.tierbackend import TierBackend  # noqa: E402
from tests.support.xdsthread import XdsThread  # noqa: E402
from tests.unit.compiler.plans import evaluate_plan  # noqa: E402

from _route_only import compile_route_only  # noqa: E402
from tiermesh.agents.authz import BudgetState, StaticBudgetSource  # noqa: E402
from tiermesh.controlplane.generators import compile_snapshot  # noqa: E402
from tiermesh.controlplane.model import (  # noqa: E402
    AuthzSettings,
    MeshModel,
    NodeSettings,
    UsageSettings,
)
from tiermesh.procs.envoy import EnvoyProcess  # noqa: E402
from tiermesh.procs.ports import free_port  # noqa: E402
from tiermesh.xds import BootstrapSpec, render_bootstrap  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "ext_authz.md"
HEADERS = {
    "content-type": "application/json",
    "x-tiermesh-tenant": "acme",
    "x-tiermesh-sensitivity": "public",
    "x-tiermesh-task": "classify",
}
BODY = json.dumps(
    {
        "model": "m",
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for the support team."},
            {
                "role": "user",
                "content": "Summarise this ticket for the on-call engineer: the customer "
                "(reach them at jane.doe@example.com) reports that exports of the Q3 "
                "revenue dashboard time out after 30 seconds since the upgrade to 4.2. " * 3,
            },
        ],
    }
).encode()


def nodelay_backends(server: type[Any] = tierbackend._Server) -> None:
    """Make the test backends (``server``, an ``http.server`` subclass) set
    ``TCP_NODELAY`` on accepted connections.

    ``http.server`` writes the status and headers, then the body, in two ``send`` calls.
    With Nagle's algorithm on, the small body waits until the headers segment is ACKed,
    and Envoy (like any Linux peer in request/response mode) delays that ACK ~40 ms. A
    tcpdump of one request shows it: the backend's 137-byte header segment, then its
    4-byte body 47 ms later. The stall belongs to the backend, not to ext_authz; which
    listener caught it depended on the kernel's delayed-ACK state per connection.
    """
    original = server.get_request

    def get_request(self: Any) -> tuple[socket.socket, Any]:
        connection, address = original(self)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address

    server.get_request = get_request


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def check_request() -> external_auth_pb2.CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="POST", path="/v1/chat/completions", headers=HEADERS, raw_body=BODY
    )
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )


async def direct(port: int, concurrency: int, count: int, seconds: float) -> dict[str, Any]:
    request = check_request()
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        await stub.Check(request, timeout=5)
        deadline = time.perf_counter() + seconds
        per_task = max(1, count // concurrency)

        async def worker() -> None:
            for _ in range(per_task):
                if time.perf_counter() > deadline:
                    return
                started = time.perf_counter()
                await stub.Check(request, timeout=5)
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "concurrency": concurrency,
        "calls": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "latencies": latencies,
    }


def start_envoy(
    workdir: Path,
    name: str,
    plan: Any,
    authz: AuthzSettings | None,
    usage: UsageSettings | None = None,
) -> tuple[XdsThread, EnvoyProcess, int]:
    """An xDS server and a ready Envoy serving ``plan`` on a free app port (returned)."""
    xds = XdsThread()
    listener = free_port()
    settings = NodeSettings(app_port=listener, authz=authz, usage=usage)
    model = MeshModel.build([plan], {NODE: settings})
    # Without ext_authz: the route-only baseline (tiermesh itself never serves it).
    snapshot = compile_snapshot(model, NODE) if authz else compile_route_only(model, NODE)
    xds.set_snapshot(NODE, snapshot)
    spec = BootstrapSpec(
        node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=free_port()
    )
    (workdir / name).mkdir()
    envoy = EnvoyProcess(render_bootstrap(spec), workdir=workdir / name, name=name)
    envoy.start()
    envoy.wait_ready(timeout=20)
    return xds, envoy, listener


def send(connection: http.client.HTTPConnection, body: bytes = BODY) -> tuple[int, float]:
    status, _, latency = exchange(connection, body)
    return status, latency


def exchange(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes, float]:
    """POST ``body`` as a chat completion; status, whole answer body, seconds taken."""
    started = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", body=body, headers=HEADERS)
    response = connection.getresponse()
    answer = response.read()
    return response.status, answer, time.perf_counter() - started


def warm_connection(port: int, body: bytes = BODY) -> http.client.HTTPConnection:
    """A keep-alive ``TCP_NODELAY`` connection to ``port`` once its routes answer 200,
    after 50 warm-up requests."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    deadline = time.monotonic() + 10
    while send(connection, body)[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("routes not served")
        time.sleep(0.05)
    for _ in range(50):
        send(connection, body)
    return connection


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "requests": len(values),
        "p50_ms": statistics.median(values) * 1000,
        "p99_ms": pct(values, 0.99) * 1000,
    }


def through_envoy(ports: dict[str, int], count: int, seconds: float) -> dict[str, Any]:
    """``count`` requests to each of ``ports`` (name → app port) in turn, one at a time;
    :func:`summary` of each."""
    connections = {name: warm_connection(port) for name, port in ports.items()}
    samples: dict[str, list[float]] = {name: [] for name in ports}
    errors: dict[str, list[int]] = {name: [] for name in ports}
    deadline = time.perf_counter() + seconds
    for _ in range(count):
        if time.perf_counter() > deadline:
            break
        for name, connection in connections.items():
            status, latency = send(connection)
            if status != 200:  # counted and reported, not timed
                errors[name].append(status)
                continue
            samples[name].append(latency)
    for connection in connections.values():
        connection.close()
    return {name: {**summary(values), "errors": errors[name]} for name, values in samples.items()}


def fsync_probe(directory: Path, count: int = 2000) -> dict[str, float]:
    """p50/p99 ms of appending one 1.5 KB line and ``fdatasync``-ing it, ``count`` times."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    line = b"x" * 1500 + b"\n"
    latencies = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            os.write(fd, line)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return {"p50_ms": statistics.median(latencies) * 1000, "p99_ms": pct(latencies, 0.99) * 1000}


KEYS = ("p50_ms", "p99_ms")
SERVERS = ("cache off", "cache on")
"""The two authz servers, the same but for the decision cache."""


def direct_rounds(
    servers: dict[str, AuthzThread], concurrency: int, count: int, seconds: float, rounds: int
) -> dict[str, dict[str, Any]]:
    """``count`` calls per server at ``concurrency``, split over ``rounds`` alternating
    rounds: decisions/s of the median round, p50/p99 over every call."""
    per_round = max(concurrency, count // rounds)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, authz in servers.items():
            runs[name].append(authz.run(direct(authz.port, concurrency, per_round, seconds)))
    rows = {}
    for name, results in runs.items():
        latencies = [value for result in results for value in result["latencies"]]
        rows[name] = {
            "concurrency": concurrency,
            "calls": len(latencies),
            "per_s": statistics.median(result["per_s"] for result in results),
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": pct(latencies, 0.99) * 1000,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    nodelay_backends()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tiermesh-bench-authz-") as tmp:
        workdir = Path(tmp)
        backends = {name: TierBackend(name) for name in ("edge", "gpu", "cloud")}
        budget = StaticBudgetSource({"acme": BudgetState.of(1, 100)})
        servers = {
            name: AuthzThread(
                workdir / f"spool-{index}", budget, 64 * 1024, decision_cache=name == "cache on"
            )
            for index, name in enumerate(SERVERS)
        }
        started: list[tuple[XdsThread, EnvoyProcess]] = []
        try:
            direct_rows = []
            for concurrency in (1, 16):
                before = {name: (a.log.next_seq, a.log.commits) for name, a in servers.items()}
                rows = direct_rounds(servers, concurrency, args.count, args.seconds, args.rounds)
                for name, authz in servers.items():
                    records, commits = before[name]
                    rows[name]["per_commit"] = (authz.log.next_seq - records) / max(
                        1, authz.log.commits - commits
                    )
                direct_rows.append(rows)
            plan = evaluate_plan(small_catalog({n: b.port for n, b in backends.items()}))
            xds, envoy, plain = start_envoy(workdir, "plain", plan, None)
            started.append((xds, envoy))
            ports = {"without": plain}
            for index, (name, authz) in enumerate(servers.items()):
                xds, envoy, ports[name] = start_envoy(
                    workdir, f"authz-{index}", plan, AuthzSettings(port=authz.port)
                )
                started.append((xds, envoy))
            disk = [fsync_probe(workdir)]
            envoy_rounds = [
                through_envoy(ports, args.count, args.seconds) for _ in range(args.rounds)
            ]
            disk.append(fsync_probe(workdir))
            records = sum(authz.log.next_seq for authz in servers.values())
            cache = servers["cache on"].authorizer.cache
            hits = (cache.hits, cache.misses) if cache is not None else (0, 0)
        finally:
            for xds, envoy in started:
                envoy.stop()
                xds.close()
            for authz in servers.values():
                authz.close()
            for backend in backends.values():
                backend.stop()
    loads = (load_before, os.getloadavg())
    report(args.results, direct_rows, envoy_rounds, disk, records, hits, loads)


def added(envoy: dict[str, Any], key: str, name: str) -> float:
    return float(envoy[name][key] - envoy["without"][key])


def report(
    path: Path,
    direct_rows: list[dict[str, dict[str, Any]]],
    rounds: list[dict[str, Any]],
    disk: list[dict[str, float]],
    records: int,
    hits: tuple[int, int],
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> None:
    headline = {
        name: tuple(statistics.median(added(envoy, key, name) for envoy in rounds) for key in KEYS)
        for name in SERVERS
    }
    change = [  # cache on against cache off, round by round
        statistics.median(
            added(envoy, key, SERVERS[1]) - added(envoy, key, SERVERS[0]) for envoy in rounds
        )
        for key in KEYS
    ]
    lines = [
        "# ext_authz: request-time decisions",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()}; load average (1/5/15 min) before "
        + " / ".join(f"{value:.2f}" for value in loads[0])
        + ", after "
        + " / ".join(f"{value:.2f}" for value in loads[1])
        + f". Body {len(BODY)} bytes (chat with one email, the same on every request); shipped "
        "request policy on regorus; decision log durable (fdatasync, group commit) in a temp "
        f"dir; {records} records written in this run (every answered request has one, with "
        "and without the cache). Decision cache of the `cache on` server: "
        f"{hits[0]} hits, {hits[1]} misses. Client, both authz servers and test backends "
        "share one Python process (the GIL); each Envoy runs with 1 worker. Method: "
        "`bench/ext_authz.py` docstring.",
        "",
        "## Direct gRPC Check calls (alternating servers)",
        "",
        "| concurrency | server | calls | decisions/s | p50 ms | p99 ms | records per fsync |",
        "|---:|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['concurrency']} | {name} | {r['calls']} | {r['per_s']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['per_commit']:.1f} |"
            for rows in direct_rows
            for name, r in rows.items()
        ),
        "",
        "## Through Envoy, same route, requests in turn",
        "",
        "| round | requests each | route only p50 / p99 ms | "
        + " | ".join(f"{name}: p50 / p99 ms | added p50 / p99 ms" for name in SERVERS)
        + " |",
        "|---:|---:|---:|" + "---:|---:|" * len(SERVERS),
        *(
            f"| {index} | {envoy['without']['requests']} | {envoy['without']['p50_ms']:.2f} / "
            f"{envoy['without']['p99_ms']:.2f} | "
            + " | ".join(
                f"{envoy[name]['p50_ms']:.2f} / {envoy[name]['p99_ms']:.2f} | "
                f"+{added(envoy, 'p50_ms', name):.2f} / +{added(envoy, 'p99_ms', name):.2f}"
                for name in SERVERS
            )
            + " |"
            for index, envoy in enumerate(rounds, 1)
        ),
        "",
        "**Added by ext_authz over the compiled route (median over rounds)**: "
        + "; ".join(
            f"{name} p50 +{p50:.2f} ms, p99 +{p99:.2f} ms" for name, (p50, p99) in headline.items()
        )
        + ". Targets (issue 16): <= 0.5 ms p50 and <= 1 ms p99 added: "
        + ("met" if headline["cache on"][0] <= 0.5 and headline["cache on"][1] <= 1 else "NOT met")
        + " with the cache on. Cache on against cache off, the median of the rounds' "
        f"differences: p50 {change[0]:+.2f} ms, p99 {change[1]:+.2f} ms.",
        "",
        "Answers other than 200 through Envoy (not timed): "
        + "; ".join(
            f"{name} {sum(len(envoy[name]['errors']) for envoy in rounds)}"
            + (
                " (HTTP "
                + ", ".join(
                    str(code) for code in sorted({c for e in rounds for c in e[name]["errors"]})
                )
                + ")"
                if any(envoy[name]["errors"] for envoy in rounds)
                else ""
            )
            for name in ("without", *SERVERS)
        )
        + ".",
        "",
        "Disk, bare write + fdatasync of a 1.5 KB line in the spool's directory: "
        + "; ".join(
            f"{when} p50 {d['p50_ms']:.2f} ms / p99 {d['p99_ms']:.2f} ms"
            for when, d in zip(("before", "after"), disk, strict=True)
        )
        + ".",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    _, marker, notes = previous.partition(NOTES_MARKER)
    path.write_text(text + "\n" + marker + notes if marker else text, encoding="utf-8")


NOTES_MARKER = "<!-- notes below are kept when the benchmark rewrites this file -->"
"""What follows this line in the results file (profiles, earlier runs) survives a rerun."""


if __name__ == "__main__":
    main()
