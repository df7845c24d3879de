"""Behaviour of the in-memory fake that the contract suite cannot drive: time, compaction."""

from __future__ import annotations

import asyncio

import pytest

from tiermesh.controlplane.store import (
    EventKind,
    LeaseExpired,
    ManualClock,
    MemoryStore,
    NodeLease,
    StoreUnavailable,
    WatchCompacted,
    keep_alive,
)


async def test_lease_expires_exactly_when_the_clock_passes_its_ttl() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    lease = await store.register_node("edge-1", b"{}", 5)

    clock.advance(4.9)
    assert [n.node_id for n in await store.list_nodes()] == ["edge-1"]
    assert await store.refresh_lease(lease) == 5
    clock.advance(4.9)
    assert len(await store.list_nodes()) == 1
    clock.advance(0.1)
    assert await store.list_nodes() == ()
    with pytest.raises(LeaseExpired):
        await store.refresh_lease(lease)


async def test_expiry_is_one_revision_and_reaches_open_watches_without_other_calls() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    await store.register_node("a", b"{}", 1)
    start = store.revision
    async with store.watch("nodes/", after_revision=start) as stream:
        clock.advance(1)  # no store call in between: the clock drives expiry
        async with asyncio.timeout(1):
            event = await anext(stream)
    assert (event.kind, event.key, event.revision) == (EventKind.DELETE, "nodes/a", start + 1)
    assert store.revision == start + 1


async def test_revisions_move_only_on_writes() -> None:
    store = MemoryStore()
    assert store.revision == 1
    assert await store.delete("ca/missing") is False
    assert store.revision == 1
    assert await store.put("ca/a", b"1") == 2
    assert (await store.read_prefix("")).revision == 2


async def test_watch_from_compacted_history_raises_watch_compacted() -> None:
    store = MemoryStore()
    for i in range(5):
        await store.put("ca/a", str(i).encode())
    await store.compact(4)

    with pytest.raises(WatchCompacted) as caught:
        async with store.watch("ca/", after_revision=1):
            pass
    assert (caught.value.after_revision, caught.value.compacted_revision) == (1, 4)
    async with store.watch("ca/", after_revision=3) as stream:
        async with asyncio.timeout(1):
            event = await anext(stream)
    assert (event.revision, event.value) == (4, b"2")


async def test_simulated_outage_fails_calls_and_recovers() -> None:
    store = MemoryStore()
    store.set_unavailable()
    with pytest.raises(StoreUnavailable, match="memory"):
        await store.get_usage("acme", month="2026-12")
    store.set_unavailable(False)
    assert (await store.add_usage("acme", month="2026-12", tokens=1)).tokens == 1


async def test_closed_store_refuses_calls_and_ends_open_watches() -> None:
    store = MemoryStore()
    stream = store.watch("", after_revision=1)
    await stream.__aenter__()
    await store.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.get("ca/a")


async def test_iterating_an_unentered_watch_is_a_programming_error() -> None:
    stream = MemoryStore().watch("", after_revision=1)
    with pytest.raises(RuntimeError, match="async with"):
        await anext(stream)


async def test_manual_clock_sleep_wakes_only_when_advanced_far_enough() -> None:
    clock = ManualClock()
    sleeper = asyncio.create_task(clock.sleep(1.0))
    await asyncio.sleep(0)
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(0.5)
    async with asyncio.timeout(1):
        await sleeper


async def test_keep_alive_gives_up_after_a_whole_ttl_of_outage() -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    lease = await store.register_node("edge-1", b"{}", 3)
    task = asyncio.create_task(keep_alive(store, lease, sleep=clock.sleep))
    await asyncio.sleep(0)
    store.set_unavailable()
    for _ in range(2):
        clock.advance(1)
        for _ in range(5):
            await asyncio.sleep(0)
    assert not task.done()  # a short outage is ridden out
    clock.advance(1)
    async with asyncio.timeout(1):
        with pytest.raises(StoreUnavailable):
            await task


def test_keep_alive_interval_must_be_shorter_than_the_ttl() -> None:
    lease = NodeLease("edge-1", 1, 3)
    with pytest.raises(ValueError, match="interval_s"):
        asyncio.run(keep_alive(MemoryStore(), lease, interval_s=3))
