"""Fan-out of the ADS server: how fast N connected Envoy-like nodes converge on a change.

Per (mode, N) it starts a fresh server process (``SnapshotCache`` + ``AdsServer`` +
``start_server`` on 127.0.0.1) and K client worker processes that run the N nodes, one
ADS stream and node id each (see ``bench/_fanout_client.py``). It measures:

- initial connect + fetch: from "go" to the server seeing every node ACK all four types;
- convergence: from the first ``cache.set_snapshot`` of a changed snapshot to the server
  receiving the last node's ACK of the changed version(s) (counted in ``Callbacks.on_ack``),
  with the clients' own ACK send times as a cross-check;
- control-plane CPU seconds during convergence (``time.process_time()`` in the server);
- server RSS per node: (RSS with N nodes synced - RSS before any client) / N.

Writes a markdown table to ``bench/results/xds_fanout.md`` and prints it.

    .venv/bin/python bench/xds_fanout.py [--nodes 100,1000,5000] [--modes sotw,delta]
        [--workers K] [--streams-per-channel 1] [--timeout 120] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import gc
import io
import multiprocessing as mp
import os
import platform
import pstats
import signal
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import google.protobuf as protobuf
import grpc
import psutil
from envoy.config.core.v3 import base_pb2
from rich.console import Console
from rich.table import Table

from _fanout_client import WorkerConfig, raise_nofile_limit, worker_main
from tiermesh.xds import AdsServer, Callbacks, Snapshot, SnapshotCache, start_server, typeurls
from tiermesh.xds.builders import eds_cluster, http_listener, load_assignment, route_config
from tiermesh.xds.status import Mode

RESULTS = Path(__file__).parent / "results" / "xds_fanout.md"
CONVERGE_TARGET_S = {1000: 1.0, 5000: 5.0}
RSS_TARGET_BYTES = 100_000
SHORT = typeurls.SHORT_NAMES


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True, slots=True)
class Shape:
    groups: int
    clusters: int
    endpoints: int
    change: str
    """``eds``: one cluster's endpoints change; ``cds+eds``: that cluster changes too."""


def group_snapshot(shape: Shape, group: str, *, changed: bool) -> Snapshot:
    """One group's snapshot: ``clusters`` EDS clusters of ``endpoints`` endpoints, one
    listener, one route table. The groups differ in a response header of their route."""
    names = [f"svc-{c:02d}" for c in range(shape.clusters)]
    moved = names[len(names) // 3]

    def endpoints(name: str) -> list[tuple[str, int]]:
        c = names.index(name)
        base = 8000 + 100 * c + (50 if changed and name == moved else 0)
        return [(f"10.0.{c}.{e + 1}", base + e) for e in range(shape.endpoints)]

    def timeout(name: str) -> float:
        return 2.0 if changed and name == moved and "cds" in shape.change else 1.0

    return Snapshot.build(
        clusters=[eds_cluster(n, connect_timeout_s=timeout(n)) for n in names],
        endpoints=[load_assignment(n, endpoints(n)) for n in names],
        listeners=[http_listener("app", address="127.0.0.1", port=10000, route_config_name="app")],
        routes=[
            route_config(
                "app",
                [(f"/{n}/", n) for n in names] + [("/", names[0])],
                response_headers=[("x-node-group", group)],
            )
        ],
    )


def group_names(shape: Shape) -> list[str]:
    return [f"group-{g:02d}" for g in range(shape.groups)]


def node_group_key(node: base_pb2.Node) -> str:
    """Nodes share a snapshot per Envoy service cluster (``--service-cluster``)."""
    return str(node.cluster)


# --------------------------------------------------------------------------- server process


class AckTracker(Callbacks):
    """Counts, per node, ACKs of the wanted version of each wanted type; notes when the last
    node has ACKed all of them. Runs on the server's event loop."""

    def __init__(self, nodes: int, want: dict[str, dict[str, str]]) -> None:
        self.nodes = nodes
        self.want = want
        """group → type URL → version every node of the group must ACK."""
        self.group_of: dict[str, str] = {}
        self.pending: dict[str, set[str]] = {}
        self.completed: set[str] = set()
        self.done_at: list[float] = []
        self.finished = asyncio.Event()
        self.cpu_at_finish = 0.0
        self.first_open = 0.0
        self.opened = 0

    def on_stream_open(self, node: base_pb2.Node, mode: Mode) -> None:
        if not self.opened:
            self.first_open = time.monotonic()
        self.opened += 1
        self.group_of[node.id] = node.cluster
        if node.id not in self.completed:  # a retried stream of a node already counted
            self.pending[node.id] = set(self.want[node.cluster])

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        pending = self.pending.get(node_id)
        if not pending or type_url not in pending:
            return
        if self.want[self.group_of[node_id]][type_url] != version:
            return
        pending.discard(type_url)
        if not pending:
            self.completed.add(node_id)
            self.done_at.append(time.monotonic())
            if len(self.done_at) == self.nodes:
                self.cpu_at_finish = time.process_time()
                self.finished.set()

    def arm(self, want: dict[str, dict[str, str]]) -> None:
        """Start counting ACKs of ``want`` from every connected node."""
        self.want = want
        self.completed = set()
        self.done_at = []
        self.finished = asyncio.Event()
        for node_id, group in self.group_of.items():
            self.pending[node_id] = set(want[group])


@dataclass(frozen=True, slots=True)
class ServerConfig:
    nodes: int
    shape: Shape
    settle_s: float
    profile: str | None
    label: str
    server_options: tuple[tuple[str, int], ...]
    progress: bool


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _established(port: int) -> int:
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def _progress(tracker: AckTracker, port: int) -> None:
    while True:
        print(
            f"  [server] streams opened {tracker.opened}, nodes done {len(tracker.done_at)}, "
            f"TCP connections {_established(port)}, CPU {time.process_time():.1f} s, "
            f"RSS {psutil.Process().memory_info().rss / 1e6:.0f} MB"
            + (
                f", Python heap {tracemalloc.get_traced_memory()[0] / 1e6:.0f} MB"
                if tracemalloc.is_tracing()
                else ""
            ),
            file=sys.stderr,
            flush=True,
        )
        await asyncio.sleep(2)


def _write_profile(profiler: cProfile.Profile, path: Path) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue(), encoding="utf-8")


async def _serve(cfg: ServerConfig, conn: Connection) -> None:
    loop = asyncio.get_running_loop()

    async def recv() -> Any:
        return await loop.run_in_executor(None, conn.recv)

    groups = group_names(cfg.shape)
    before = {g: group_snapshot(cfg.shape, g, changed=False) for g in groups}
    after = {g: group_snapshot(cfg.shape, g, changed=True) for g in groups}
    initial_want = {
        g: {
            t: s.type_version(t)
            for t in (typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE)
        }
        for g, s in before.items()
    }
    change_want = {
        g: {
            t: v
            for t in typeurls.PUSH_ORDER
            if (v := s.type_version(t)) != before[g].type_version(t)
        }
        for g, s in after.items()
    }
    cache = SnapshotCache(node_key=node_group_key)
    for g, snap in before.items():
        cache.set_snapshot(g, snap)
    tracker = AckTracker(cfg.nodes, initial_want)
    ads = AdsServer(cache, callbacks=tracker)
    server, port = await start_server(ads, "127.0.0.1:0", options=cfg.server_options)
    rss_idle = _rss()
    cpu_listen = time.process_time()
    initial_profiler = cProfile.Profile() if cfg.profile else None
    if initial_profiler is not None:
        initial_profiler.enable()
    conn.send(("listening", port, rss_idle))

    reporter = asyncio.create_task(_progress(tracker, port)) if cfg.progress else None

    await tracker.finished.wait()
    if initial_profiler is not None:
        initial_profiler.disable()
        _write_profile(initial_profiler, Path(cfg.profile or ".", f"initial_{cfg.label}.txt"))
    synced = {
        "first_open": tracker.first_open,
        "synced_at": tracker.done_at[-1],
        "sync_cpu_s": tracker.cpu_at_finish - cpu_listen,
    }
    await asyncio.sleep(cfg.settle_s)
    synced["rss_synced"] = _rss()
    synced["connections"] = _established(port)
    synced["streams"] = tracker.opened
    conn.send(("synced", synced))

    message = await recv()
    assert message[0] == "publish", message
    tracker.arm(change_want)
    profiler = cProfile.Profile() if cfg.profile else None
    if profiler is not None:
        profiler.enable()
    cpu0 = time.process_time()
    t_publish = time.monotonic()
    for g, snap in after.items():
        cache.set_snapshot(g, snap)
    await tracker.finished.wait()
    if profiler is not None:
        profiler.disable()
        _write_profile(profiler, Path(cfg.profile or ".", f"converge_{cfg.label}.txt"))
    conn.send(
        (
            "converged",
            {
                "t_publish": t_publish,
                "done_at": tracker.done_at,
                "cpu_s": tracker.cpu_at_finish - cpu0,
                "want": change_want,
            },
        )
    )
    message = await recv()
    if reporter is not None:
        reporter.cancel()
    await server.stop(grace=None)


def server_main(cfg: ServerConfig, conn: Connection) -> None:
    """Process entry point of the control plane under test."""
    raise_nofile_limit()
    with contextlib.suppress(EOFError, BrokenPipeError):
        asyncio.run(_serve(cfg, conn))


# --------------------------------------------------------------------------- orchestration


@dataclass(frozen=True, slots=True)
class Scenario:
    mode: str
    nodes: int
    streams_per_channel: int = 1
    server_options: tuple[tuple[str, int], ...] = ()
    """Extra channel arguments for ``start_server``; empty means the library's defaults."""

    @property
    def label(self) -> str:
        extra = "_opts" if self.server_options else ""
        return f"{self.mode}_{self.nodes}_s{self.streams_per_channel}{extra}"

    def options_text(self) -> str:
        if not self.server_options:
            return "defaults"
        return ", ".join(f"{k.removeprefix('grpc.server.')}={v:,}" for k, v in self.server_options)


class ScenarioTimeout(Exception):
    def __init__(self, phase: str) -> None:
        super().__init__(f"timed out waiting for {phase}")
        self.phase = phase


@dataclass(slots=True)
class Result:
    scenario: Scenario
    workers: int
    load_before: float
    status: str = "ok"
    connections: int = 0
    streams_opened: int = 0
    client_retries: int = 0
    initial_s: float = 0.0
    initial_cpu_s: float = 0.0
    converge_s: float = 0.0
    p50_s: float = 0.0
    p99_s: float = 0.0
    client_converge_s: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    rss_idle: int = 0
    rss_synced: int = 0
    other_cpu_s: float = 0.0
    client_errors: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return self.scenario.nodes

    @property
    def mode(self) -> str:
        return self.scenario.mode

    @property
    def rss_per_node(self) -> float:
        return (self.rss_synced - self.rss_idle) / self.nodes

    def converge_verdict(self) -> str:
        target = CONVERGE_TARGET_S.get(self.nodes)
        if self.status != "ok":
            return "FAIL"
        if target is None:
            return "no target"
        return f"{'pass' if self.converge_s <= target else 'FAIL'} (≤ {target:g} s)"

    def rss_verdict(self) -> str:
        if self.status != "ok":
            return "FAIL"
        return "pass" if self.rss_per_node <= RSS_TARGET_BYTES else "FAIL"


def _expect(conn: Connection, kind: str, deadline: float) -> Any:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not conn.poll(remaining):
            raise ScenarioTimeout(kind)
        message = conn.recv()
        if message[0] == kind:
            return message


def _client_errors(conns: Sequence[Connection]) -> list[str]:
    """Stream errors the workers saw, asked for after a timeout (best effort)."""
    errors: list[str] = []
    for conn in conns:
        with contextlib.suppress(ScenarioTimeout, BrokenPipeError, OSError, EOFError):
            conn.send(("report",))
            _, _, records = _expect(conn, "acks", time.monotonic() + 5)
            errors.extend(error for *_, failures, error in records if failures)
    return errors


def _cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _stop(processes: Sequence[BaseProcess], conns: Sequence[Connection]) -> None:
    """Ask each process to stop, in order, waiting for each; then terminate what is left."""
    for proc, conn in zip(processes, conns, strict=True):
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("stop",))
        proc.join(10)
    for proc in processes:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, sig)
                proc.join(3)


def _busy_cpu() -> float:
    """CPU seconds the whole machine has spent not idle."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def run_scenario(
    scenario: Scenario,
    workers: int,
    shape: Shape,
    timeout_s: float,
    *,
    profile: str | None = None,
    progress: bool = False,
) -> Result:
    """Run one scenario in fresh processes; never raises for a slow or failed run."""
    ctx = mp.get_context("spawn")
    mode, nodes = scenario.mode, scenario.nodes
    result = Result(scenario, workers, os.getloadavg()[0])
    deadline = time.monotonic() + timeout_s
    server_end, child_end = ctx.Pipe()
    cfg = ServerConfig(
        nodes, shape, 1.0, profile, scenario.label, scenario.server_options, progress
    )
    server = ctx.Process(target=server_main, args=(cfg, child_end), name="xds-server")
    processes: list[BaseProcess] = [server]
    conns: list[Connection] = [server_end]
    phase = "server start"
    try:
        server.start()
        _, port, result.rss_idle = _expect(server_end, "listening", deadline)
        phase = "workers ready"
        for w in range(workers):
            ours, theirs = ctx.Pipe()
            worker_cfg = WorkerConfig(
                worker=w,
                nodes=tuple(range(w, nodes, workers)),
                groups=shape.groups,
                delta=mode == "delta",
                streams_per_channel=scenario.streams_per_channel,
                stop_after_s=timeout_s + 30,
            )
            proc = ctx.Process(
                target=worker_main, args=(worker_cfg, theirs), name=f"ads-clients-{w}"
            )
            proc.start()
            processes.append(proc)
            conns.append(ours)
        worker_conns = conns[1:]
        worker_pids = [p.pid for p in processes[1:] if p.pid is not None]
        for conn in worker_conns:
            _expect(conn, "ready", deadline)
        phase = "initial connect + fetch"
        t_go = time.monotonic()
        for conn in worker_conns:
            conn.send(("go", f"127.0.0.1:{port}"))
        _, synced = _expect(server_end, "synced", deadline)
        result.initial_s = synced["synced_at"] - t_go
        result.initial_cpu_s = synced["sync_cpu_s"]
        result.rss_synced = synced["rss_synced"]
        result.connections = synced["connections"]
        result.streams_opened = synced["streams"]

        phase = "convergence"
        ours = [*worker_pids, server.pid or 0]
        cpu_clients0, cpu_ours0, busy0 = _cpu(worker_pids), _cpu(ours), _busy_cpu()
        server_end.send(("publish",))
        _, converged = _expect(server_end, "converged", deadline)
        result.client_cpu_s = _cpu(worker_pids) - cpu_clients0
        result.other_cpu_s = max(0.0, (_busy_cpu() - busy0) - (_cpu(ours) - cpu_ours0))
        t_publish = converged["t_publish"]
        done = sorted(t - t_publish for t in converged["done_at"])
        result.converge_s = done[-1]
        result.p50_s = statistics.median(done)
        result.p99_s = done[int(0.99 * (len(done) - 1))]
        result.cpu_s = converged["cpu_s"]

        phase = "client reports"
        want: dict[str, dict[str, str]] = converged["want"]
        latest = 0.0
        missing = 0
        for conn in worker_conns:
            conn.send(("report",))
        for conn in worker_conns:
            _, _, records = _expect(conn, "acks", deadline)
            for _node, group, acked, failures, error in records:
                times = [acked.get(t, ("", 0.0)) for t in want[group]]
                if any(
                    version != want[group][t]
                    for (version, _), t in zip(times, want[group], strict=True)
                ):
                    missing += 1
                else:
                    latest = max(latest, *(at for _, at in times))
                if failures:
                    result.client_retries += failures
                    result.client_errors.append(error)
        result.client_converge_s = latest - t_publish
        if missing:
            result.status = f"{missing} clients did not report the new version"
    except ScenarioTimeout as exc:
        result.status = f"timeout ({exc.phase}, {timeout_s:g} s)"
        result.client_errors = _client_errors(conns[1:])
    except (EOFError, BrokenPipeError) as exc:
        result.status = f"process died during {phase}: {exc!r}"
    finally:
        _stop(list(reversed(processes)), list(reversed(conns)))
    return result


# --------------------------------------------------------------------------- report


def _kb(n: float) -> str:
    return f"{n / 1000:,.1f} KB"


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


COLUMNS = (
    "mode",
    "N",
    "streams/conn",
    "server options",
    "TCP conns / streams",
    "initial connect+fetch",
    "client stream retries",
    "convergence (last ACK)",
    "p50 / p99 node ACKed",
    "client-side last ACK",
    "server CPU (converge)",
    "client CPU (converge)",
    "other CPU (converge)",
    "RSS idle → synced",
    "RSS / node",
)


def rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    out = []
    for r in results:
        head = (
            r.mode,
            f"{r.nodes:,}",
            str(r.scenario.streams_per_channel),
            r.scenario.options_text(),
        )
        if r.status != "ok":
            out.append(
                (*head, "", r.status, f"{len(r.client_errors):,} nodes failed")
                + ("",) * (len(COLUMNS) - len(head) - 3)
            )
            continue
        out.append(
            (
                *head,
                f"{r.connections:,} / {r.streams_opened:,}",
                f"{r.initial_s:.2f} s ({r.initial_cpu_s:.2f} s server CPU)",
                f"{r.client_retries:,}",
                f"**{r.converge_s:.3f} s** {r.converge_verdict()}",
                f"{r.p50_s:.3f} / {r.p99_s:.3f} s",
                f"{r.client_converge_s:.3f} s",
                f"{r.cpu_s:.3f} s ({r.cpu_s / r.nodes * 1e6:,.0f} µs/node)",
                f"{r.client_cpu_s:.2f} s",
                f"{r.other_cpu_s:.2f} s",
                f"{_mb(r.rss_idle)} → {_mb(r.rss_synced)}",
                f"**{_kb(r.rss_per_node)}** {r.rss_verdict()}",
            )
        )
    return out


METHOD_NOTES = (
    "How it is measured:",
    "",
    "- *initial connect+fetch*: from telling the workers to start (they are already imported)",
    "  to the server's `Callbacks.on_ack` seeing the last node ACK its group's CDS, EDS, LDS",
    "  and RDS versions. Nodes subscribe like Envoy (CDS wildcard → EDS names → LDS wildcard",
    "  → RDS names) and retry a failed stream with Envoy's jittered backoff (0.5 s base).",
    "- *convergence*: from just before the first `set_snapshot` of the changed snapshots to the",
    "  server receiving the last node's ACK of the changed version (`Callbacks.on_ack`, primary",
    "  measure); *p50 / p99*: when half / 99 % of nodes had ACKed; *client-side last ACK*: the",
    "  latest time a client sent that ACK (`time.monotonic()` is shared by all processes).",
    "- *server CPU*: `time.process_time()` of the server process over the convergence (all its",
    "  threads, the benchmark's small ACK-counting callback included). *client CPU*: psutil,",
    "  all workers, sampled around the convergence by the main process (a slightly wider",
    "  window). *other CPU*: busy CPU of the whole machine in that window minus ours, i.e.",
    "  disturbance by other work on the machine.",
    "- *RSS / node*: (server RSS with N nodes synced, 1 s after, after `gc.collect()`) minus",
    "  (server RSS listening with the snapshots set, before any client) over N. Each scenario",
    "  runs in a fresh server process.",
    "- The load average before a scenario includes the benchmark's own previous scenario;",
    "  *other CPU* is the better disturbance measure.",
    "",
)
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"


def markdown(
    results: Sequence[Result], args: argparse.Namespace, shape: Shape, loads: Sequence[float]
) -> str:
    errors = [
        f"{r.mode} N={r.nodes:,} ({r.scenario.options_text()}): "
        + "; ".join(f"{n:,} nodes last saw {e!r}" for e, n in Counter(r.client_errors).items())
        for r in results
        if r.client_errors
    ]
    lines = [
        "# xDS fan-out: convergence, CPU and memory of the ADS server",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: `bench/xds_fanout.py "
        f"--nodes {args.nodes} --modes {args.modes} --workers {args.workers} "
        f"--change {args.change}`{'' if args.extras else ' --no-extras'}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, grpcio {grpc.__version__}, "
        f"protobuf {protobuf.__version__}, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM. "
        f"Load average (1 min) before each scenario: {min(loads):.2f} to {max(loads):.2f}.",
        "",
        f"Server: one process, `SnapshotCache` + `AdsServer` + `start_server` on 127.0.0.1, "
        f"plaintext. Clients: K = {args.workers} worker processes with grpc.aio on the same "
        f"{os.cpu_count()} cores, so clients and server compete for CPU. Each node is its own "
        f"ADS stream with its own node id; streams/conn 1 means one gRPC channel (TCP "
        f"connection) per node.",
        "",
        f"Snapshot: {shape.clusters} EDS clusters x {shape.endpoints} endpoints, 1 listener, "
        f"1 route table; nodes map to {shape.groups} groups by `node.cluster` "
        f"(`SnapshotCache(node_key=...)`), one snapshot per group. The change moves one "
        f"cluster's endpoints ({shape.change.upper()} change) in every group: "
        f"{shape.groups} `set_snapshot` calls.",
        "",
        f"Targets: convergence of 1,000 nodes ≤ 1 s and of 5,000 nodes ≤ 5 s; "
        f"RSS ≤ {RSS_TARGET_BYTES / 1000:.0f} KB (10^5 bytes) per connected node.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row) + " |" for row in rows(results)),
        "",
        *METHOD_NOTES,
    ]
    if errors:
        lines += ["Client stream failures (each retried):", "", *(f"- {e}" for e in errors), ""]
    return "\n".join(lines)


def print_table(results: Sequence[Result]) -> None:
    table = Table(title="xDS fan-out")
    for column in COLUMNS:
        table.add_column(column)
    for row in rows(results):
        table.add_row(*(cell.replace("**", "") for cell in row))
    Console(width=260).print(table)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


#: Channel arguments that lift grpc core's backlog of RPCs not yet taken by the application
#: (RandomEarlyDetection between 1,000 and 3,000 by default): the extras show their effect.
BACKLOG_OPTIONS = (
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 20_000),
)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    options = tuple(
        (key, int(value)) for key, value in (o.split("=", 1) for o in args.server_option)
    )
    nodes = _ints(args.nodes)
    out: list[Scenario] = []
    for mode in args.modes.split(","):
        out.extend(Scenario(mode, n, args.streams_per_channel, options) for n in nodes)
        if args.extras and 1000 in nodes:
            out.append(Scenario(mode, 1000, 50, options))
        if args.extras and max(nodes) > 3000 and not options:
            out.append(Scenario(mode, max(nodes), args.streams_per_channel, BACKLOG_OPTIONS))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="100,1000,5000", help="comma-separated node counts")
    parser.add_argument("--modes", default="sotw,delta", help="sotw, delta or both")
    parser.add_argument("--workers", type=int, default=2, help="client worker processes (K)")
    parser.add_argument(
        "--streams-per-channel", type=int, default=1, help="ADS streams per gRPC channel"
    )
    parser.add_argument(
        "--no-extras",
        dest="extras",
        action="store_false",
        help="skip the extra rows: N=1000 with 50 streams per channel, and the largest N "
        "with grpc core's pending-request backlog raised",
    )
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--change", choices=("eds", "cds+eds"), default="eds")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per scenario")
    parser.add_argument("--profile", default=None, help="write server cProfiles to this folder")
    parser.add_argument("--progress", action="store_true", help="server progress on stderr")
    parser.add_argument(
        "--server-option",
        action="append",
        default=[],
        metavar="KEY=INT",
        help="extra gRPC channel argument for start_server (default: the library's)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # inherited by the spawned processes
    shape = Shape(args.groups, args.clusters, args.endpoints, args.change)
    results: list[Result] = []
    loads: list[float] = []
    for scenario in scenarios(args):
        result = run_scenario(
            scenario,
            args.workers,
            shape,
            args.timeout,
            profile=args.profile,
            progress=args.progress,
        )
        loads.append(result.load_before)
        print(
            f"{scenario.label}: {result.status}, initial {result.initial_s:.2f} s, "
            f"converge {result.converge_s:.3f} s, RSS/node {_kb(result.rss_per_node)}",
            flush=True,
        )
        results.append(result)
    text = markdown(results, args, shape, loads)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    if NOTES_MARKER in old:
        text += "\n" + old[old.index(NOTES_MARKER) :]
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
