"""The shipped edge path of several source trees, side by side: max throughput and where
the CPU goes, per process of the node.

Per round and tree (trees in turn, each round led by the next tree): a fresh edge node of
that tree (its ``bench/peer_target.py``, its ``src`` first on ``PYTHONPATH``) in front of
the same two nginx upstreams, ``--warmup`` seconds of load, then ``--seconds`` of
``wrk -t1 -c<concurrency>`` (closed loop, the body and headers of ``gateway_overhead.py``'s
edge path). Around the measured run: every node process's CPU time (user + system, all
threads, from /proc) per request answered, the agent's busiest thread (its event loop:
ext_authz, usage, shipping) as a share of one core, and how busy the whole machine was
(``/proc/stat``, both cores, everything on it). Medians over rounds; spreads as min-max.
This tree is always there as ``this tree``.

    .venv/bin/python bench/edge_trees.py --tree before=/path/to/other/tree
        [--rounds 3] [--seconds 10] [--concurrency 32] [--out bench/results/edge_trees.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from _gw_cpu import cpu_seconds, spent
from _gw_edge import EdgePath
from _gw_load import run_wrk
from _gw_upstream import Upstream
from gateway_overhead import chat_body
from tiermesh.procs.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
AGENT = "agent (ext_authz, audit, usage)"


@dataclass(slots=True)
class Rounds:
    """One tree's measurements, one entry per round."""

    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    loop_share: list[float] = field(default_factory=list)
    machine_busy: list[float] = field(default_factory=list)


def machine_ticks() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of every CPU so far."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]


def thread_seconds(pid: int) -> dict[int, float]:
    """TID → user + system CPU seconds of each thread of ``pid``."""
    try:
        return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
    except psutil.Error:
        return {}


def measure(name: str, tree: Path, upstreams: tuple[Upstream, Upstream], args: argparse.Namespace,
            into: Rounds) -> None:  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree}"}
    edge = EdgePath(
        upstreams[0].port, upstreams[1].port, peer_target=tree / "bench" / "peer_target.py", env=env
    )
    try:
        edge.start()
        url = f"http://127.0.0.1:{edge.port}/v1/chat/completions"
        body = chat_body(edge.model)
        run_wrk(url, connections=args.concurrency, seconds=args.warmup, body=body,
                headers=edge.headers)  # fmt: skip
        parts = edge.tree()
        agent = next(pid for pid, what in parts.items() if what == AGENT)
        cpu0, threads0, ticks0 = cpu_seconds(parts), thread_seconds(agent), machine_ticks()
        result = run_wrk(url, connections=args.concurrency, seconds=args.seconds, body=body,
                         headers=edge.headers)  # fmt: skip
        cpu1, threads1, ticks1 = cpu_seconds(parts), thread_seconds(agent), machine_ticks()
    finally:
        edge.close()
    used = spent(cpu0, cpu1)
    answered = max(1, result.requests)
    for what in sorted(set(parts.values())):
        seconds = sum(v for pid, v in used.items() if parts[pid] == what)
        into.cpu_us.setdefault(what, []).append(seconds / answered * 1e6)
    into.cpu_us.setdefault("node, all processes", []).append(sum(used.values()) / answered * 1e6)
    busiest = max((threads1.get(t, 0.0) - v for t, v in threads0.items()), default=0.0)
    into.loop_share.append(busiest / result.seconds)
    total, idle = ticks1[0] - ticks0[0], ticks1[1] - ticks0[1]
    into.machine_busy.append(1 - idle / total if total else float("nan"))
    into.rps.append(result.rps)
    into.p50_ms.append(result.p50_us / 1000)
    into.p99_ms.append(result.p99_us / 1000)
    into.errors += result.errors
    print(f"{name}: {result.rps:,.0f} req/s, {result.errors} errors, "
          f"node {into.cpu_us['node, all processes'][-1]:,.0f} us/req", file=sys.stderr,
          flush=True)  # fmt: skip


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-" + (
        f"{fmt.format(max(values))})"
    )


def report(results: dict[str, Rounds], args: argparse.Namespace, loads: tuple[str, str]) -> str:
    names = list(results)
    lines = [
        "# The shipped edge path, side by side by source tree",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `bench/edge_trees.py` "
        f"({args.rounds} rounds x {args.seconds:g} s per tree, wrk -t1 -c{args.concurrency}, "
        f"trees in turn, a fresh node per round); load average before / after: "
        f"{loads[0]} / {loads[1]}. Medians over rounds (min-max).",
        "",
        "| tree | req/s | p50 ms | p99 ms | errors | node CPU us/req | agent's busiest "
        "thread, share of a core | machine busy (2 cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        r = results[name]
        lines.append(
            f"| {name} | {spread(r.rps)} | {spread(r.p50_ms, '{:.1f}')} | "
            f"{spread(r.p99_ms, '{:.1f}')} | {r.errors} | "
            f"{spread(r.cpu_us['node, all processes'])} | "
            f"{spread([100 * v for v in r.loop_share])} % | "
            f"{spread([100 * v for v in r.machine_busy])} % |"
        )
    parts = sorted({p for r in results.values() for p in r.cpu_us} - {"node, all processes"})
    lines += ["", "CPU us per request by process:", "",
              "| process | " + " | ".join(names) + " |",
              "| --- |" + " ---: |" * len(names)]  # fmt: skip
    for part in parts:
        cells = [spread(results[n].cpu_us[part]) if part in results[n].cpu_us else "—"
                 for n in names]  # fmt: skip
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    for item in args.tree:
        name, _, path = item.partition("=")
        if not name or not Path(path, "bench", "peer_target.py").is_file():
            parser.error(f"--tree {item!r}: expected NAME=PATH of a tree with bench/")
        trees[name] = Path(path).resolve()
    results = {name: Rounds() for name in trees}
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    upstreams = (Upstream(free_port(), "a"), Upstream(free_port(), "b"))
    try:
        for upstream in upstreams:
            upstream.start()
        order = list(trees)
        for number in range(args.rounds):
            turn = order[number % len(order) :] + order[: number % len(order)]
            for name in turn:
                measure(name, trees[name], upstreams, args, results[name])
    finally:
        for upstream in upstreams:
            upstream.close()
    load_after = " ".join(f"{v:.2f}" for v in os.getloadavg())
    text = report(results, args, (load_before, load_after))
    if args.out is not None:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
