"""What nodes' load reports cost the control plane: reconciles per second and CPU.

One process runs a MemoryStore, the reconciler (real Rego with regorus, the real compiler
with its compile cache: ``offline_compiler``) on the demo policies and catalog, and one
writer task. N nodes are registered as the node registry stores them (a
``RegisteredNode``); the writer then rewrites each node's registration with a new
``NodeLoad`` once per second (N writes per second, spread evenly, health never changing),
as the registry does for N agents reporting at its default ``load_interval_s`` of 1 s.
Over the measured window it records:

- ``writes/s``: load writes the writer managed (the target is N);
- ``reconciles``, ``reconciles/s``: reconciles started in the window;
- ``CPU s``, ``CPU %``: the process's CPU time (every thread) in the window, and that
  per wall second (100 % = one core);
- ``reconcile s``: mean duration of the reconciles that finished in the window.

Modes: ``writes only`` runs no reconciler (what the writer and the store cost alone);
``before`` is the reconciler as it was before load reports were told apart (a subclass
in which every ``nodes/`` event schedules a reconcile); ``after`` is the reconciler as it
is. Results go to bench/results/reconcile_load_reports.md.

Run from the repository root: ``.venv/bin/python bench/reconcile_load_reports.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.unit.reconciler.policyfiles import POLICY_DIR, rego_files  # noqa: E402

from tiermesh.controlplane.api import NodeLoad, RegisteredNode  # noqa: E402
from tiermesh.controlplane.bundle import BundleOutcome  # noqa: E402
from tiermesh.controlplane.reconciler import Reconciler, ReconcileResult  # noqa: E402
from tiermesh.controlplane.reconciler.wiring import offline_compiler  # noqa: E402
from tiermesh.controlplane.store import MemoryStore, NodeLease, WatchEvent  # noqa: E402
from tiermesh.rego import RegorusEngine  # noqa: E402
from tiermesh.xds import SnapshotCache  # noqa: E402

MODES = ("writes only", "before", "after")
REGISTERED_AT = datetime(2025, 1, 1, tzinfo=UTC)


class EveryNodeEvent(Reconciler):
    """The reconciler before load reports were told apart: every ``nodes/`` event counts."""

    def _node_changed(self, event: WatchEvent) -> bool:
        return True


def registration(node_id: str, load: NodeLoad | None, seconds: float = 0.0) -> RegisteredNode:
    return RegisteredNode(
        node_id=node_id,
        tier="local",
        region="eu-west",
        residency=("eu",),
        app_port=10000,
        spiffe_id=f"spiffe://tiermesh.bench/node/{node_id}",
        registered_at=REGISTERED_AT,
        load=load,
        load_at=None if load is None else REGISTERED_AT + timedelta(seconds=seconds),
    )


def demo_bundle() -> dict[str, bytes]:
    files = rego_files()
    files["data/catalog.yaml"] = (POLICY_DIR / "data" / "catalog.yaml").read_bytes()
    return files


@dataclass
class Row:
    mode: str
    nodes: int
    window_s: float
    writes: int
    reconciles: int
    cpu_s: float
    reconcile_s: float | None
    unchanged: int | None


async def write_loads(store: MemoryStore, leases: dict[str, NodeLease], stop: asyncio.Event) -> int:
    """Rewrite every node's load once per second, evenly spread; returns the writes."""
    ids = sorted(leases)
    step = 1.0 / len(ids)
    began = time.perf_counter()
    writes = 0
    while not stop.is_set():
        node_id = ids[writes % len(ids)]
        second = writes // len(ids)
        load = NodeLoad(in_flight=second % 7, queue_depth=second % 3, tokens_per_s=second * 1.5)
        await store.update_node(leases[node_id], registration(node_id, load, second))
        writes += 1
        delay = began + writes * step - time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(delay, 0.0))
    return writes


async def scenario(mode: str, nodes: int, window_s: float, debounce_s: float) -> Row:
    store = MemoryStore()
    leases = {
        f"node-{i:03d}": await store.register_node(
            f"node-{i:03d}", registration(f"node-{i:03d}", None), ttl_s=3600
        )
        for i in range(nodes)
    }
    await store.push_bundle(demo_bundle(), expected_revision=0)
    durations: list[float] = []
    measuring = False

    async def on_plans(result: ReconcileResult, _outcome: BundleOutcome) -> None:
        if measuring:
            durations.append(result.duration_s)

    reconciler: Reconciler | None = None
    if mode != "writes only":
        kind = EveryNodeEvent if mode == "before" else Reconciler
        reconciler = kind(
            store,
            RegorusEngine,
            offline_compiler(),
            SnapshotCache(),
            debounce_s=debounce_s,
            on_plans=on_plans,
        )
        await reconciler.start()
        first = await reconciler.wait_for(lambda r: r.bundle_revision == 1, timeout_s=120)
        assert first.ok, first.errors
    try:
        stop = asyncio.Event()
        count = reconciler.reconcile_count if reconciler else 0
        unchanged = reconciler.unchanged_node_events if reconciler else 0
        cpu, wall = time.process_time(), time.perf_counter()
        measuring = True
        writer = asyncio.create_task(write_loads(store, leases, stop))
        await asyncio.sleep(window_s)
        stop.set()
        writes = await writer
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        measuring = False
        return Row(
            mode,
            nodes,
            wall,
            writes,
            reconciler.reconcile_count - count if reconciler else 0,
            cpu,
            statistics.fmean(durations) if durations else None,
            None if reconciler is None else reconciler.unchanged_node_events - unchanged,
        )
    finally:
        if reconciler is not None:
            await reconciler.aclose()
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--debounce", type=float, default=0.1, help="the control plane's default")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench/results/reconcile_load_reports.md"
    )
    args = parser.parse_args()

    rows: list[Row] = []
    for nodes in args.nodes:
        for mode in MODES:
            row = asyncio.run(scenario(mode, nodes, args.window, args.debounce))
            rows.append(row)
            print(row, flush=True)

    lines = [
        "# Load reports: reconciles and CPU while every node reports once a second",
        "",
        "N nodes registered in a MemoryStore, each rewriting its registration with a new",
        "load report once per second (health unchanged), as the node registry writes them;",
        "the reconciler evaluates the demo policies and catalog with regorus and compiles",
        f"with the real compiler and its cache (debounce {args.debounce} s, max delay 1 s).",
        f"Window: {args.window:.0f} s of wall time per row; CPU is the whole process's.",
        "",
        "| nodes | mode | writes/s | reconciles | reconciles/s | CPU s | CPU % | "
        "reconcile s | load events dropped |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        mean = "-" if row.reconcile_s is None else f"{row.reconcile_s:.2f}"
        dropped = "-" if row.unchanged is None else str(row.unchanged)
        lines.append(
            f"| {row.nodes} | {row.mode} | {row.writes / row.window_s:.0f} | {row.reconciles} | "
            f"{row.reconciles / row.window_s:.2f} | {row.cpu_s:.2f} | "
            f"{100 * row.cpu_s / row.window_s:.0f} | {mean} | {dropped} |"
        )
    lines += [
        "",
        "`before`: every `nodes/` event schedules a reconcile, so the writes never let the",
        "debounce go quiet and a reconcile starts every max delay (1 s) or as soon as the",
        "last one ends, each evaluating the policy for every node. `after`: a `nodes/`",
        "event whose registration digest (everything but the load report, of which only",
        "`healthy` counts) is unchanged is dropped before the debounce; health flips,",
        "identity, port and endpoint changes, joins and goodbyes still reconcile.",
        "`writes only`: no reconciler, the writer and the store alone.",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, shared with other work while measuring. Command: "
        f"`.venv/bin/python bench/reconcile_load_reports.py --nodes "
        f"{' '.join(str(n) for n in args.nodes)} --window {args.window:g} "
        f"--debounce {args.debounce:g}`.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
