"""EtcdStore on a 3-member cluster while members die, freeze and come back.

Every test owns its cluster (they kill members). Deadlines are the store's own: a call that
moved to another member must still finish within ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from tiermesh.controlplane.store import (
    EtcdStore,
    KeyExists,
    StoreUnavailable,
    WatchCompacted,
    WatchEvent,
    keep_alive,
)
from tiermesh.controlplane.store.etcd_watch import EtcdWatch
from tiermesh.procs.etcd_cluster import EtcdCluster

pytestmark = pytest.mark.etcd

TIMEOUT_S = 5.0
FREEZE_NOTICED_S = 1.0 + TIMEOUT_S / 2 + TIMEOUT_S / 2
"""A silent watch probes its member after 1 s; the probe gets one try (half the
deadline); the re-open elsewhere gets another try's worth on a loaded machine."""


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster.for_tests() as cluster:
        cluster.wait_for_leader()
        yield cluster


@pytest.fixture
async def store(cluster: EtcdCluster) -> AsyncIterator[EtcdStore]:
    async with EtcdStore(cluster.endpoints, timeout_s=TIMEOUT_S) as store:
        yield store


def member_of(cluster: EtcdCluster, endpoint: str) -> int:
    return cluster.endpoints.index(endpoint)


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.monotonic()
    await call()
    return time.monotonic() - started


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - polling other processes
            await asyncio.sleep(0.1)


async def test_several_endpoints_are_accepted_as_a_list_or_a_comma_list(
    cluster: EtcdCluster,
) -> None:
    async with EtcdStore(",".join(cluster.endpoints)) as joined:
        assert joined.endpoints == cluster.endpoints
        assert joined.endpoint == cluster.endpoints[0]
        await joined.put("ca/a", b"1")
    with pytest.raises(ValueError, match="given twice"):
        EtcdStore([cluster.endpoints[0], cluster.endpoints[0]])
    with pytest.raises(ValueError, match="host:port"):
        EtcdStore(f"{cluster.endpoints[0]},nonsense")


async def test_killing_the_member_in_use_moves_the_next_calls_to_another(
    cluster: EtcdCluster, store: EtcdStore
) -> None:
    await store.put("ca/a", b"1")
    used = member_of(cluster, store.endpoint)
    cluster.kill(used)

    elapsed = await timed(lambda: store.get("ca/a"))
    assert elapsed < TIMEOUT_S
    assert store.endpoint != cluster.endpoints[used]
    assert await store.put("ca/b", b"2") > 0
    found = await store.get("ca/a")
    assert found is not None
    assert found.value == b"1"


async def test_killing_the_leader_keeps_reads_and_writes_within_the_deadline(
    cluster: EtcdCluster,
) -> None:
    leader = cluster.wait_for_leader()
    # The store talks to a follower, which loses its leader too.
    follower = (leader + 1) % 3
    order = [
        cluster.endpoints[follower],
        *(e for e in cluster.endpoints if e != cluster.endpoints[follower]),
    ]
    async with EtcdStore(order, timeout_s=TIMEOUT_S) as store:
        await store.put("ca/a", b"1")
        cluster.kill(leader)
        elapsed = await timed(lambda: store.get("ca/a"))
        assert elapsed < TIMEOUT_S
        # A write lands within one deadline: CAS create, so a repeat cannot double it.
        started = time.monotonic()
        outcomes: list[str] = []
        for _ in range(3):
            try:
                await store.put_if_absent("ca/b", b"2")
                outcomes.append("written")
            except KeyExists:
                outcomes.append("written")  # an earlier try whose answer was lost did land
            except StoreUnavailable as exc:
                outcomes.append(exc.detail)
            if outcomes[-1] == "written":
                break
        assert outcomes[-1] == "written"
        # Only a write whose outcome is unknown is reported; one that never left is retried.
        assert all("outcome unknown" in outcome for outcome in outcomes[:-1])
        assert time.monotonic() - started < TIMEOUT_S
    assert cluster.wait_for_leader(other_than=leader) != leader


async def test_a_paused_member_is_left_within_the_deadline(
    cluster: EtcdCluster, store: EtcdStore
) -> None:
    await store.put("ca/a", b"1")
    used = member_of(cluster, store.endpoint)
    cluster.pause(used)
    try:
        elapsed = await timed(lambda: store.get("ca/a"))
        assert elapsed < TIMEOUT_S
        assert store.endpoint != cluster.endpoints[used]
        # Writes go to the member now in use without delay.
        assert await timed(lambda: store.put("ca/b", b"2")) < TIMEOUT_S / 2
    finally:
        cluster.resume(used)


async def test_a_lease_bound_registration_outlives_the_member_that_granted_it(
    cluster: EtcdCluster, store: EtcdStore
) -> None:
    ttl_s = 3
    lease = await store.register_node("edge-1", b'{"node_id": "edge-1"}', ttl_s)
    keeper = asyncio.create_task(keep_alive(store, lease, interval_s=0.5))

    async def still_registered() -> None:
        await asyncio.sleep(2 * ttl_s)  # two TTLs: a lease not kept alive is gone by now
        assert not keeper.done()
        (node,) = await store.list_nodes()
        assert (node.node_id, node.lease_id) == ("edge-1", lease.lease_id)

    try:
        granted_by = member_of(cluster, store.endpoint)
        cluster.kill(granted_by)
        await still_registered()
        cluster.restart(granted_by)
        leader = cluster.wait_for_leader()
        cluster.kill(leader)
        await still_registered()
        assert await store.refresh_lease(lease) > 0
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


async def test_all_members_down_names_every_endpoint_then_recovers(
    cluster: EtcdCluster,
) -> None:
    async with EtcdStore(cluster.endpoints, timeout_s=2.0) as store:
        await store.put("ca/a", b"1")
        for index in range(3):
            cluster.kill(index)
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("ca/a")
        assert caught.value.endpoint == ",".join(cluster.endpoints)
        for endpoint in cluster.endpoints:
            assert endpoint in str(caught.value)

        for index in range(3):
            cluster.restart(index, wait=False)
        for index in range(3):
            cluster.wait_healthy(index, 20.0)

        async def readable() -> bool:
            try:
                found = await store.get("ca/a")
            except StoreUnavailable:
                return False
            return found is not None and found.value == b"1"

        await eventually(readable, 10.0)


async def write_numbered(store: EtcdStore, until: asyncio.Event, limit: int = 2000) -> int:
    """Create ``ca/NNNN`` for 0, 1, … in order, each exactly once, across failovers, until
    ``until`` is set; the number written. A create whose outcome is unknown is checked by
    reading before it is tried again."""
    number = 0
    while not until.is_set() and number < limit:
        key = f"ca/{number:04d}"
        deadline = time.monotonic() + 4 * TIMEOUT_S
        while True:
            assert time.monotonic() < deadline, f"could not write {key}"
            try:
                await store.put_if_absent(key, str(number).encode())
                break
            except KeyExists:
                break
            except StoreUnavailable:
                with contextlib.suppress(StoreUnavailable):
                    if await store.get(key) is not None:
                        break
        number += 1
        await asyncio.sleep(0.01)
    return number


async def collect(
    stream: AsyncIterator[WatchEvent], count: int, timeout_s: float
) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async with asyncio.timeout(timeout_s):
        async for event in stream:
            events.append(event)
            if len(events) == count:
                break
    return events


async def numbered_under(
    cluster: EtcdCluster, store: EtcdStore, chaos: Callable[[EtcdWatch], Awaitable[None]]
) -> tuple[list[WatchEvent], int, int]:
    """Numbered keys written and watched while ``chaos(stream)`` runs: (events seen,
    keys written, times the watch re-opened)."""
    start = (await store.read_prefix("ca/")).revision
    events: list[WatchEvent] = []
    async with (
        EtcdStore(cluster.endpoints, timeout_s=TIMEOUT_S) as watcher,
        watcher.watch("ca/", after_revision=start) as stream,
    ):

        async def consume() -> None:
            async for event in stream:
                events.append(event)

        consumer = asyncio.create_task(consume())
        chaos_done = asyncio.Event()
        writer = asyncio.create_task(write_numbered(store, chaos_done))
        try:
            await chaos(stream)
            await asyncio.sleep(0.5)
            chaos_done.set()
            written = await writer
            async with asyncio.timeout(3 * TIMEOUT_S):
                while len(events) < written:  # noqa: ASYNC110 - the consumer fills it
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # room for a repeated event to show up
        finally:
            consumer.cancel()
            writer.cancel()
            await asyncio.gather(consumer, writer, return_exceptions=True)
        return events, written, stream.reopened


def assert_exactly_once(events: list[WatchEvent], written: int) -> None:
    assert written > 50
    assert [event.key for event in events] == [f"ca/{n:04d}" for n in range(written)]
    revisions = [event.revision for event in events]
    assert revisions == sorted(set(revisions))


async def test_a_watch_sees_every_numbered_key_exactly_once_while_members_die(
    cluster: EtcdCluster, store: EtcdStore
) -> None:
    async def chaos(stream: EtcdWatch) -> None:
        # The watch's member, then the leader: killed, given time, brought back.
        for round_ in range(4):
            await asyncio.sleep(0.5)
            if round_ % 2 == 0 and stream.member is not None:
                victim = member_of(cluster, stream.member)
            else:
                victim = await asyncio.to_thread(cluster.wait_for_leader)
            await asyncio.to_thread(cluster.kill, victim)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cluster.restart, victim)

    events, written, reopened = await numbered_under(cluster, store, chaos)
    assert_exactly_once(events, written)
    assert reopened >= 2  # its own member died twice


async def test_a_rolling_restart_of_every_member_loses_and_repeats_nothing(
    cluster: EtcdCluster, store: EtcdStore
) -> None:
    async def chaos(stream: EtcdWatch) -> None:
        for index in range(3):
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cluster.stop, index)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(cluster.restart, index)

    events, written, reopened = await numbered_under(cluster, store, chaos)
    assert_exactly_once(events, written)
    assert reopened >= 1  # its member was among those restarted


async def test_a_watch_follows_when_its_member_freezes(
    cluster: EtcdCluster, store: EtcdStore
) -> None:
    start = (await store.read_prefix("ca/")).revision
    async with (
        EtcdStore(cluster.endpoints, timeout_s=TIMEOUT_S) as watcher,
        watcher.watch("ca/", after_revision=start) as stream,
    ):
        await store.put("ca/first", b"1")
        (first,) = await collect(stream, 1, TIMEOUT_S)
        frozen = member_of(cluster, stream.member or "")
        cluster.pause(frozen)
        try:
            # A frozen leader is replaced first, so these writes are not left in doubt.
            await asyncio.to_thread(cluster.wait_for_leader, other_than=frozen)
            others = [e for i, e in enumerate(cluster.endpoints) if i != frozen]
            async with EtcdStore(others) as writer:
                await writer.put("ca/second", b"2")
            started = time.monotonic()
            (second,) = await collect(stream, 1, 2 * TIMEOUT_S)
            assert time.monotonic() - started < FREEZE_NOTICED_S
        finally:
            cluster.resume(frozen)
    assert (first.key, second.key) == ("ca/first", "ca/second")
    assert stream.reopened >= 1
    assert stream.member is None or member_of(cluster, stream.member) != frozen


async def test_compaction_while_a_watch_fails_over_raises_watch_compacted(
    cluster: EtcdCluster, store: EtcdStore
) -> None:
    start = (await store.read_prefix("ca/")).revision
    async with (
        EtcdStore(cluster.endpoints, timeout_s=TIMEOUT_S) as watcher,
        watcher.watch("ca/", after_revision=start) as stream,
    ):
        await store.put("ca/first", b"1")
        await collect(stream, 1, TIMEOUT_S)
        frozen = member_of(cluster, stream.member or "")
        cluster.pause(frozen)
        try:
            # A frozen leader is replaced first, so these writes are not left in doubt.
            await asyncio.to_thread(cluster.wait_for_leader, other_than=frozen)
            others = [e for i, e in enumerate(cluster.endpoints) if i != frozen]
            async with EtcdStore(others) as writer:
                for n in range(3):
                    last = await writer.put("ca/later", str(n).encode())
                await writer.compact(last)
            with pytest.raises(WatchCompacted) as caught:
                await collect(stream, 1, 2 * TIMEOUT_S)
        finally:
            cluster.resume(frozen)
    assert caught.value.compacted_revision == last
