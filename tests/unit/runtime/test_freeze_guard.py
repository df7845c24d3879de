"""`FreezeGuard` and the snapshot cache it gates: after a freeze, no snapshot is handed
out until a full reconcile has caught up, then every stream is told to look again.

The clock and the reconcile are stand-ins; a real replica frozen with SIGSTOP while a
push is made is in ``tests/integration/controlplane/test_replica_pause.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from tiermesh.controlplane.runtime.freeze_guard import FreezeGuard
from tiermesh.xds import Snapshot, SnapshotCache
from tiermesh.xds.builders import eds_cluster, load_assignment


class Harness:
    def __init__(self) -> None:
        self.now = 100.0
        self.reconciles = 0
        self.released = 0
        self.finish = asyncio.Event()
        self.fail = False
        self.guard = FreezeGuard(
            resettle=self.resettle,
            on_release=self.release,
            tick_s=0.05,
            frozen_s=2.0,
            clock=lambda: self.now,
        )

    async def resettle(self) -> None:
        self.reconciles += 1
        await self.finish.wait()
        if self.fail:
            raise RuntimeError("etcd is gone")

    def release(self) -> None:
        self.released += 1


@pytest.fixture
async def harness() -> Harness:
    h = Harness()
    await h.guard.start()
    return h


async def test_serves_until_started_and_while_ticks_are_on_time() -> None:
    h = Harness()
    h.now += 60  # not started: nothing to judge by
    assert h.guard.serving()
    await h.guard.start()
    for _ in range(20):
        h.now += 0.5
        h.guard.tick()
        assert h.guard.serving()
    assert h.reconciles == 0
    await h.guard.aclose()


async def test_a_freeze_holds_snapshots_until_the_reconcile_after_it_is_done(
    harness: Harness,
) -> None:
    h = harness
    h.now += 8.0  # SIGSTOP for 8 s, then SIGCONT: the first callbacks see the gap
    assert not h.guard.serving()
    h.guard.tick()
    await asyncio.sleep(0)
    assert h.reconciles == 1
    assert not h.guard.serving()
    h.now += 3.0  # the reconcile takes a while; ticks go on and start no second one
    h.guard.tick()
    assert h.reconciles == 1
    assert not h.guard.serving()
    h.finish.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert h.guard.serving()
    assert h.released == 1
    assert h.guard.document() == {"serving": True, "freezes": 1}
    await h.guard.aclose()


async def test_a_failed_reconcile_releases_the_last_snapshots(harness: Harness) -> None:
    h = harness
    h.fail = True
    h.finish.set()
    h.now += 5.0
    h.guard.tick()
    for _ in range(5):
        await asyncio.sleep(0)
    assert h.released == 1
    assert h.guard.serving()
    await h.guard.aclose()


def test_tick_and_threshold_are_checked() -> None:
    async def nothing() -> None:
        return None

    with pytest.raises(ValueError, match="tick_s < frozen_s"):
        FreezeGuard(resettle=nothing, on_release=lambda: None, tick_s=1.0, frozen_s=1.0)


def _snapshot(port: int) -> Snapshot:
    return Snapshot.build(
        clusters=[eds_cluster("c")], endpoints=[load_assignment("c", [("127.0.0.1", port)])]
    )


def test_the_cache_hands_out_nothing_while_not_serving_and_wakes_every_watcher() -> None:
    serving = [True]
    cache = SnapshotCache(serving=lambda: serving[0])
    woken: list[str] = []
    cache.subscribe("a", lambda: woken.append("a"))
    cache.subscribe("b", lambda: woken.append("b"))
    cache.set_snapshot("a", _snapshot(9001))
    assert woken == ["a"]
    serving[0] = False
    second = _snapshot(9002)
    cache.set_snapshot("a", second)
    assert cache.get_snapshot("a") is None
    assert cache.stored("a") is not None
    serving[0] = True
    cache.notify_all()
    assert sorted(woken) == ["a", "a", "a", "b"]
    assert cache.get_snapshot("a") is second
