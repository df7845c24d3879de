"""Time for an EtcdStore to recover when an etcd member dies, and how steady the cluster is.

Each run starts a fresh 3-member `EtcdCluster` on loopback (no fsync) and one `EtcdStore`
over all members, ordered so that the member to be killed is the one the store uses. A
writer creates numbered keys (``put_if_absent`` every 10 ms; a create whose outcome is
unknown is checked by reading before it is tried again) while a watch on another store
(same member first) collects them. After one second the member is SIGKILLed:

- (a) ``follower``: a follower (the store's member);
- (b) ``leader``: the leader (the store's member), so the cluster also elects.

Recorded per run: ``write``: from the kill to the first write that completes after it;
``watch``: from the kill to the first watch event for a key written after it;
``unknown``: writes that raised `StoreUnavailable` (outcome unknown) before recovery;
``exact``: whether the watch saw every key exactly once, in order.

``--stability`` seconds: with no fault, the same write + watch load runs on a cluster of
each election timing and the elections (raft term increases) are counted, first as the
machine is, then with ``--hog`` busy-looping processes added (CPU starvation is what makes
tight timings elect without a fault).

Writes bench/results/etcd_failover.md. Run from the repository root:
``.venv/bin/python bench/etcd_failover.py [--runs 5] [--stability 20] [--hog 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tiermesh.controlplane.store import (  # noqa: E402
    EtcdStore,
    KeyExists,
    StoreUnavailable,
    WatchEvent,
)
from tiermesh.procs.etcd_cluster import EtcdCluster  # noqa: E402

TIMINGS = {
    "100/1000 ms (etcd default)": (100, 1000),
    "50/500 ms (`EtcdCluster.for_tests`)": (50, 500),
    "10/50 ms": (10, 50),
}
"""Heartbeat / election timeout pairs."""
RESULTS = ROOT / "bench" / "results" / "etcd_failover.md"
NOTE = """\
Each leader run had one write whose outcome was unknown: the one in flight at the kill.
When that failure is immediate (its connection to the dead leader broke), the writer
checks it with a read and the next write lands once a new leader is elected: the medians,
which follow the election timeout. When a write instead waits on a follower for the dead
leader, nothing answers it and it ends at the store's 2.5 s per-try timeout: the maxima,
the same for every timing. Reads, and writes that never left, move on at once.
"""


@dataclass
class Load:
    """The writer's and the watcher's records, times from `time.monotonic`."""

    written: list[tuple[int, float]] = field(default_factory=list)
    unknown: list[float] = field(default_factory=list)
    seen: list[tuple[WatchEvent, float]] = field(default_factory=list)


async def write(store: EtcdStore, load: Load, stop: asyncio.Event) -> None:
    number = 0
    while not stop.is_set():
        key = f"bench/{number:06d}"
        for _ in range(200):
            try:
                await store.put_if_absent(key, b"x")
                break
            except KeyExists:
                break
            except StoreUnavailable:
                load.unknown.append(time.monotonic())
                with contextlib.suppress(StoreUnavailable):
                    if await store.get(key) is not None:
                        break
        load.written.append((number, time.monotonic()))
        number += 1
        await asyncio.sleep(0.01)


async def watch(store: EtcdStore, after: int, load: Load) -> None:
    async with store.watch("bench/", after_revision=after) as stream:
        async for event in stream:
            load.seen.append((event, time.monotonic()))


async def run_load(
    cluster: EtcdCluster,
    order: list[str],
    seconds_before: float,
    seconds_after: float,
    fault: int | None,
) -> tuple[Load, float, bool]:
    """Write and watch; kill member ``fault`` after ``seconds_before``. (load, kill time,
    watch exact)."""
    load = Load()
    stop = asyncio.Event()
    async with EtcdStore(order) as writer, EtcdStore(order) as watcher:
        start = (await writer.read_prefix("bench/")).revision
        watching = asyncio.create_task(watch(watcher, start, load))
        writing = asyncio.create_task(write(writer, load, stop))
        await asyncio.sleep(seconds_before)
        killed_at = time.monotonic()
        if fault is not None:
            await asyncio.to_thread(cluster.kill, fault)
        await asyncio.sleep(seconds_after)
        stop.set()
        await writing
        deadline = time.monotonic() + 10
        while len(load.seen) < len(load.written) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    keys = [event.key for event, _ in load.seen]
    exact = keys == [f"bench/{n:06d}" for n, _ in load.written]
    return load, killed_at, exact


@dataclass
class Run:
    write_s: float
    watch_s: float
    unknown: int
    exact: bool


async def one_run(timing: tuple[int, int], scenario: str) -> Run:
    heartbeat, election = timing
    with EtcdCluster(
        unsafe_no_fsync=True, heartbeat_interval_ms=heartbeat, election_timeout_ms=election
    ) as cluster:
        leader = cluster.wait_for_leader()
        victim = leader if scenario == "leader" else (leader + 1) % 3
        order = [cluster.endpoint(victim)] + [
            e for i, e in enumerate(cluster.endpoints) if i != victim
        ]
        load, killed_at, exact = await run_load(cluster, order, 1.0, 4.0, victim)
    after_writes = [t for _, t in load.written if t > killed_at]
    first_written_after = min((n for n, t in load.written if t > killed_at), default=None)
    watch_times = [
        t
        for event, t in load.seen
        if first_written_after is not None
        and int(event.key.rsplit("/", 1)[1]) >= first_written_after
    ]
    return Run(
        write_s=(min(after_writes) - killed_at) if after_writes else float("inf"),
        watch_s=(min(watch_times) - killed_at) if watch_times else float("inf"),
        unknown=sum(1 for t in load.unknown if t > killed_at),
        exact=exact,
    )


async def stability(timing: tuple[int, int], seconds: float) -> tuple[int, bool]:
    """Elections during ``seconds`` of write + watch load without a fault."""
    heartbeat, election = timing
    with EtcdCluster(
        unsafe_no_fsync=True, heartbeat_interval_ms=heartbeat, election_timeout_ms=election
    ) as cluster:
        cluster.wait_for_leader()
        before = cluster.raft_term()
        _, _, exact = await run_load(cluster, list(cluster.endpoints), seconds, 0.0, None)
        return cluster.raft_term() - before, exact


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def hogs(count: int) -> Iterator[None]:
    """``count`` busy-looping child processes, killed by PID on exit."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            proc.join()


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stability", type=float, default=20.0)
    parser.add_argument("--hog", type=int, default=2)
    args = parser.parse_args()

    rows: list[str] = []
    for label, timing in TIMINGS.items() if args.runs > 0 else ():
        for scenario in ("follower", "leader"):
            runs = [await one_run(timing, scenario) for _ in range(args.runs)]
            rows.append(
                f"| {label} | {scenario} killed | {len(runs)} | "
                f"{fmt([r.write_s for r in runs])} | {fmt([r.watch_s for r in runs])} | "
                f"{sum(r.unknown for r in runs)} | "
                f"{sum(r.exact for r in runs)}/{len(runs)} |"
            )
            print(rows[-1], flush=True)
    steady: list[str] = []
    for hog in (0, args.hog):
        for label, timing in TIMINGS.items():
            with hogs(hog):
                elections, exact = await stability(timing, args.stability)
            steady.append(
                f"| {label} | {hog} | {args.stability:.0f} s | {elections} | "
                f"{'yes' if exact else 'NO'} |"
            )
            print(steady[-1], flush=True)

    load = os.getloadavg()
    lines = [
        "# etcd failover: time to recover from a member's death",
        "",
        f"`bench/etcd_failover.py --runs {args.runs} --stability {args.stability:.0f} "
        f"--hog {args.hog}`; "
        "3-member `EtcdCluster` on loopback (no fsync), `EtcdStore` defaults "
        "(5 s call deadline, 2.5 s per try, 1 s watch probe), writer: `put_if_absent` "
        "every 10 ms.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; load average at the "
        f"end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (shared with other work).",
        "",
        "Seconds from SIGKILL of the store's member to the first write that completes after "
        "it and to the first watch event of a key written after it, median / max over the "
        "runs; 'unknown' counts writes that raised `StoreUnavailable` (outcome unknown, "
        "then checked by a read); 'exact' counts runs whose watch saw every key exactly "
        "once, in order.",
        "",
        "| heartbeat / election | fault | runs | write recovery s | watch recovery s "
        "| unknown writes | exact |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *NOTE.splitlines(),
        "",
        "Elections with no fault under the same load (raft term increases):",
        "",
        "| heartbeat / election | busy-loop processes added | load for | elections | watch exact |",
        "|---|---|---|---|---|",
        *steady,
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every cluster is closed and its data dir removed."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    asyncio.run(main())
