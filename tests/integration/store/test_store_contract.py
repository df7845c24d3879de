"""The Store contract, run against the in-memory fake and a real etcd server alike."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel

from tiermesh.controlplane.store import (
    API_KEYS_PREFIX,
    DEFAULT_MAX_REQUEST_BYTES,
    ApiKeyRecord,
    BundleConflict,
    BundleTooLarge,
    BundleTooManyFiles,
    EtcdStore,
    EventKind,
    InvalidKey,
    JsonScalar,
    KeyExists,
    LeaseExpired,
    MemoryStore,
    Store,
    StoreUnavailable,
    UnknownApiKey,
    WatchCompacted,
    WatchEvent,
    WatchStream,
    bundle_digest,
    keep_alive,
)
from tiermesh.procs.etcd import EtcdServer

from .conftest import Harness

FILES = {
    "policies/routing/main.rego": b"package routing\n\ndefault allow := false\n",
    "policies/routing/tiers.rego": b"package routing\n\ntiers := [1]\n",
    "data/models.json": b'{"small": "smollm2"}',
}


async def collect(stream: WatchStream, count: int, timeout_s: float = 5.0) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async with asyncio.timeout(timeout_s):
        async for event in stream:
            events.append(event)
            if len(events) == count:
                break
    return events


async def drain(stream: WatchStream, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        async for _ in stream:
            pass


# -- policy bundle ---------------------------------------------------------------------------


async def test_empty_store_has_bundle_revision_zero(store: Store) -> None:
    bundle = await store.get_bundle()
    assert bundle.revision == 0
    assert dict(bundle.files) == {}
    assert bundle.sha256 == bundle_digest({})
    assert bundle.etcd_revision >= 1


async def test_push_then_read_round_trips_files_digest_and_provenance(store: Store) -> None:
    provenance: dict[str, JsonScalar] = {
        "git_commit": "0123abc",
        "author": "ops@example.com",
        "dirty": False,
    }
    pushed = await store.push_bundle(FILES, expected_revision=0, provenance=provenance)
    read = await store.get_bundle()

    assert pushed.revision == read.revision == 1
    assert dict(read.files) == FILES
    assert read.sha256 == pushed.sha256 == bundle_digest(FILES)
    assert dict(read.provenance) == provenance
    assert read.etcd_revision == pushed.etcd_revision
    assert set(read.rego_modules) == {"policies/routing/main.rego", "policies/routing/tiers.rego"}
    assert read.rego_modules["policies/routing/tiers.rego"].startswith("package routing")
    assert dict(read.data_documents) == {"data/models.json": b'{"small": "smollm2"}'}
    with pytest.raises(TypeError):
        read.files["x.rego"] = b""  # type: ignore[index]


async def test_push_with_stale_revision_conflicts_and_changes_nothing(store: Store) -> None:
    await store.push_bundle(FILES, expected_revision=0)
    await store.push_bundle({"policies/a.rego": b"package a"}, expected_revision=1)
    before = await store.read_prefix("bundle/")

    with pytest.raises(BundleConflict) as caught:
        await store.push_bundle({"policies/b.rego": b"package b"}, expected_revision=1)

    assert (caught.value.expected_revision, caught.value.actual_revision) == (1, 2)
    assert "revision 1" in str(caught.value)
    assert "revision 2" in str(caught.value)
    after = await store.read_prefix("bundle/")
    assert after == before  # same keys, values and store revision: nothing was written
    assert dict((await store.get_bundle()).files) == {"policies/a.rego": b"package a"}


async def test_first_push_must_expect_revision_zero(store: Store) -> None:
    with pytest.raises(BundleConflict) as caught:
        await store.push_bundle(FILES, expected_revision=3)
    assert (caught.value.expected_revision, caught.value.actual_revision) == (3, 0)
    assert (await store.read_prefix("bundle/")).entries == ()


async def test_concurrent_pushes_on_one_revision_have_exactly_one_winner(store: Store) -> None:
    await store.push_bundle(FILES, expected_revision=0)
    results = await asyncio.gather(
        *(
            store.push_bundle({f"policies/p{i}.rego": b"package p"}, expected_revision=1)
            for i in range(8)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, BundleConflict) for r in results if r is not winners[0])
    bundle = await store.get_bundle()
    assert bundle.revision == 2
    assert dict(bundle.files) == dict(winners[0].files)


async def test_push_deletes_removed_files_in_the_same_revision(store: Store) -> None:
    first = await store.push_bundle(FILES, expected_revision=0)
    new_files = {
        "policies/routing/main.rego": b"package routing\n",
        "policies/new.rego": b"package new\n",
    }
    async with store.watch("bundle/", after_revision=first.etcd_revision) as stream:
        second = await store.push_bundle(new_files, expected_revision=1)
        # 2 deletes + 2 file puts + the metadata put.
        events = await collect(stream, 5)

    files_now = await store.read_prefix("bundle/files/")
    assert {e.key for e in files_now.entries} == {
        "bundle/files/policies/routing/main.rego",
        "bundle/files/policies/new.rego",
    }
    assert {e.revision for e in events} == {second.etcd_revision}
    deleted = {e.key for e in events if e.kind is EventKind.DELETE}
    assert deleted == {"bundle/files/policies/routing/tiers.rego", "bundle/files/data/models.json"}
    assert events[-1].key == "bundle/meta"
    assert json.loads(events[-1].value)["revision"] == 2


async def test_too_large_bundle_is_refused_before_anything_is_written(store: Store) -> None:
    await store.push_bundle(FILES, expected_revision=0)
    before = await store.read_prefix("")
    huge = {**FILES, "data/huge.json": b"0" * (DEFAULT_MAX_REQUEST_BYTES + 1)}

    with pytest.raises(BundleTooLarge) as caught:
        await store.push_bundle(huge, expected_revision=1)

    error = caught.value
    assert error.limit_bytes == DEFAULT_MAX_REQUEST_BYTES
    assert error.request_bytes > DEFAULT_MAX_REQUEST_BYTES
    assert (error.largest_path, error.largest_bytes) == (
        "data/huge.json",
        len(huge["data/huge.json"]),
    )
    assert "data/huge.json" in str(error)
    assert await store.read_prefix("") == before


async def test_largest_accepted_bundle_fits_the_servers_real_limit(harness: Harness) -> None:
    # The size check must be conservative: the biggest bundle it lets through is one the
    # server (etcd's default --max-request-bytes) really accepts.
    store = harness.store
    probe = {"data/big.bin": b""}
    with pytest.raises(BundleTooLarge) as caught:
        await (await harness.new_store(max_request_bytes=0)).push_bundle(probe, expected_revision=0)
    fixed_cost = caught.value.request_bytes
    biggest = {"data/big.bin": b"x" * (DEFAULT_MAX_REQUEST_BYTES - fixed_cost)}

    with pytest.raises(BundleTooLarge):
        await store.push_bundle(
            {"data/big.bin": biggest["data/big.bin"] + b"x"}, expected_revision=0
        )
    pushed = await store.push_bundle(biggest, expected_revision=0)

    assert pushed.revision == 1
    assert (await store.get_bundle()).files["data/big.bin"] == biggest["data/big.bin"]


async def test_bundle_with_more_operations_than_a_transaction_allows_is_refused(
    store: Store,
) -> None:
    # etcd's default --max-txn-ops is 128: 127 files + the metadata fit, 128 files do not.
    fits = {f"policies/p{i:03}.rego": b"package p" for i in range(127)}
    await store.push_bundle(fits, expected_revision=0)
    too_many = {f"policies/q{i:03}.rego": b"package q" for i in range(128)}
    before = await store.read_prefix("bundle/")

    with pytest.raises(BundleTooManyFiles) as caught:
        await store.push_bundle(too_many, expected_revision=1)

    assert (caught.value.operations, caught.value.limit) == (129, 128)
    assert await store.read_prefix("bundle/") == before


async def test_bundle_paths_are_validated(store: Store) -> None:
    for bad in ("/abs.rego", "a/../b.rego", "", "a//b.rego"):
        with pytest.raises(InvalidKey):
            await store.push_bundle({bad: b"package x"}, expected_revision=0)
    assert (await store.get_bundle()).revision == 0


# -- node registrations -----------------------------------------------------------------------


class Registration(BaseModel):
    node_id: str
    endpoints: list[str]


async def test_registration_is_listed_and_revoke_removes_it(store: Store) -> None:
    lease_a = await store.register_node("edge-1", b'{"tier": "edge"}', 30)
    lease_b = await store.register_node("gpu-1", Registration(node_id="gpu-1", endpoints=["x"]), 30)

    nodes = await store.list_nodes()
    assert [n.node_id for n in nodes] == ["edge-1", "gpu-1"]
    assert nodes[0].registration == b'{"tier": "edge"}'
    assert json.loads(nodes[1].registration) == {"node_id": "gpu-1", "endpoints": ["x"]}
    assert (nodes[0].lease_id, nodes[1].lease_id) == (lease_a.lease_id, lease_b.lease_id)
    assert lease_a.lease_id != lease_b.lease_id

    await store.revoke_lease(lease_a)
    await store.revoke_lease(lease_a)  # idempotent
    assert [n.node_id for n in await store.list_nodes()] == ["gpu-1"]
    with pytest.raises(LeaseExpired):
        await store.refresh_lease(lease_a)
    await store.revoke_lease(lease_b)


async def test_reregistering_supersedes_the_old_session(store: Store) -> None:
    old = await store.register_node("edge-1", b'{"v": 1}', 30)
    new = await store.register_node("edge-1", b'{"v": 2}', 30)
    await store.revoke_lease(old)  # the old session ending must not remove the new one

    (node,) = await store.list_nodes()
    assert (node.registration, node.lease_id) == (b'{"v": 2}', new.lease_id)
    with pytest.raises(LeaseExpired):
        await store.update_node(old, b'{"v": 3}')
    await store.update_node(new, b'{"v": 4}')
    assert (await store.list_nodes())[0].registration == b'{"v": 4}'
    await store.revoke_lease(new)
    with pytest.raises(LeaseExpired):
        await store.update_node(new, b'{"v": 5}')
    assert await store.list_nodes() == ()


async def test_registration_must_be_json_and_ttl_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        await store.register_node("edge-1", b"not json", 10)
    with pytest.raises(ValueError, match="ttl_s"):
        await store.register_node("edge-1", b"{}", 0)
    with pytest.raises(InvalidKey):
        await store.register_node("a/b", b"{}", 10)
    assert await store.list_nodes() == ()


async def test_lease_expiry_removes_registration_and_refresh_keeps_it(harness: Harness) -> None:
    store = harness.store
    kept = await store.register_node("kept", b"{}", 1)
    dropped = await store.register_node("dropped", b"{}", 1)
    assert kept.ttl_s >= 1
    snapshot = await store.read_prefix("nodes/")

    async with store.watch("nodes/", after_revision=snapshot.revision) as stream:
        for _ in range(4):  # 2 s in all: twice the TTL
            await harness.let_time_pass(0.5)
            assert await store.refresh_lease(kept) >= 1

        async def dropped_is_gone() -> bool:
            return [n.node_id for n in await store.list_nodes()] == ["kept"]

        await harness.eventually(dropped_is_gone)
        (event,) = await collect(stream, 1)
    assert (event.kind, event.key) == (EventKind.DELETE, "nodes/dropped")
    with pytest.raises(LeaseExpired):
        await store.refresh_lease(dropped)

    await harness.let_time_pass(1.5)

    async def kept_is_gone() -> bool:
        return await store.list_nodes() == ()

    await harness.eventually(kept_is_gone)


async def test_keep_alive_holds_a_lease_until_cancelled_or_lost(harness: Harness) -> None:
    store = harness.store
    held = await store.register_node("held", b"{}", 1)
    lost = await store.register_node("lost", b"{}", 1)
    holder = asyncio.create_task(keep_alive(store, held, interval_s=0.25, sleep=harness.sleep))
    loser = asyncio.create_task(keep_alive(store, lost, interval_s=0.25, sleep=harness.sleep))
    await store.revoke_lease(lost)

    for _ in range(8):  # 2 s: twice the TTL
        await harness.let_time_pass(0.25)
    assert [n.node_id for n in await store.list_nodes()] == ["held"]
    assert loser.done()
    with pytest.raises(LeaseExpired):
        await loser

    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    await harness.let_time_pass(1.5)

    async def held_is_gone() -> bool:
        return await store.list_nodes() == ()

    await harness.eventually(held_is_gone)


# -- usage counters --------------------------------------------------------------------------


async def test_concurrent_usage_increments_all_count_once(store: Store) -> None:
    results = await asyncio.gather(
        *(store.add_usage("acme", month="2026-12", tokens=7, cost_micro=1500) for _ in range(20))
    )

    usage = await store.get_usage("acme", month="2026-12")
    assert (usage.tokens, usage.cost_micro) == (140, 30_000)
    # Every increment saw a distinct prior state: the returned totals are 7, 14, ..., 140.
    assert sorted(r.tokens for r in results) == [7 * i for i in range(1, 21)]
    assert usage.revision == max(r.revision for r in results)
    assert (await store.get_usage("other", month="2026-12")).tokens == 0


async def test_usage_counters_are_per_month_and_past_months_are_kept(store: Store) -> None:
    await store.add_usage("acme", month="2026-12", tokens=5, cost_micro=500)
    assert (await store.get_usage("acme", month="2027-01")).cost_micro == 0

    january = await store.add_usage("acme", month="2027-01", tokens=1, cost_micro=10)
    assert (january.tokens, january.cost_micro) == (1, 10)
    # A late report of December after the boundary is December's.
    december = await store.add_usage("acme", month="2026-12", tokens=2, cost_micro=200)
    assert (december.tokens, december.cost_micro) == (7, 700)
    assert (await store.get_usage("acme", month="2027-01")).cost_micro == 10

    keys = [entry.key for entry in (await store.read_prefix("usage/")).entries]
    assert keys == ["usage/2026-12/acme", "usage/2027-01/acme"]


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "26-12", "", "2026-12/x"])
async def test_usage_refuses_a_malformed_month(store: Store, month: str) -> None:
    with pytest.raises(InvalidKey):
        await store.add_usage("acme", month=month, tokens=1)
    with pytest.raises(InvalidKey):
        await store.get_usage("acme", month=month)
    assert (await store.read_prefix("usage/")).entries == ()


async def test_counters_from_before_months_are_adopted_once(harness: Harness, store: Store) -> None:
    """Counters kept before usage was per month (``usage/<tenant>``) are folded into the
    month the upgrade happens in, each move atomic; a second adoption finds nothing."""
    await harness.put_raw("usage/acme", b'{"tokens": 40, "cost_micro": 4000}')
    await harness.put_raw("usage/globex", b'{"tokens": 1, "cost_micro": 7}')
    await harness.put_raw("usage/broken", b"not json")
    await store.add_usage("acme", month="2026-12", tokens=2, cost_micro=200)
    await store.add_usage("acme", month="2026-11", tokens=9, cost_micro=900)

    adopted = await store.adopt_legacy_usage(month="2026-12")

    assert [(u.tenant, u.tokens, u.cost_micro) for u in adopted] == [
        ("acme", 42, 4200),
        ("globex", 1, 7),
    ]
    assert all(u.revision > 0 for u in adopted)
    assert (await store.get_usage("acme", month="2026-12")).cost_micro == 4200
    assert (await store.get_usage("acme", month="2026-11")).cost_micro == 900
    keys = [entry.key for entry in (await store.read_prefix("usage/")).entries]
    assert keys == [
        "usage/2026-11/acme",
        "usage/2026-12/acme",
        "usage/2026-12/globex",
        "usage/broken",  # unreadable: left for a person to look at
    ]
    assert await store.adopt_legacy_usage(month="2026-12") == ()
    assert (await store.get_usage("acme", month="2026-12")).cost_micro == 4200
    with pytest.raises(InvalidKey):
        await store.adopt_legacy_usage(month="2026-13")


async def test_usage_rejects_negative_increments(store: Store) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        await store.add_usage("acme", month="2026-12", tokens=-1)
    assert (await store.get_usage("acme", month="2026-12")).revision == 0


# -- tenant API keys -------------------------------------------------------------------------

KEY = ApiKeyRecord("0123456789abcdef", "acme", "ab" * 32, "2026-01-02T03:04:05+00:00")


async def test_api_key_round_trips_and_is_listed_by_id(store: Store) -> None:
    other = ApiKeyRecord("00000000000000ff", "globex", "cd" * 32, "2026-01-02T03:04:06+00:00")
    created = await store.create_api_key(KEY)
    await store.create_api_key(other)

    listed = await store.list_api_keys()

    assert created == KEY
    assert created.mod_revision > 0
    assert listed == (other, KEY)
    assert [k.mod_revision for k in listed][1] == created.mod_revision
    assert not listed[1].revoked


async def test_creating_an_existing_key_id_is_refused_and_writes_nothing(store: Store) -> None:
    first = await store.create_api_key(KEY)
    with pytest.raises(KeyExists):
        await store.create_api_key(ApiKeyRecord(KEY.key_id, "globex", "ee" * 32, "later"))
    assert await store.list_api_keys() == (KEY,)
    assert (await store.list_api_keys())[0].mod_revision == first.mod_revision


async def test_revoking_marks_the_key_once_and_keeps_it_listed(store: Store) -> None:
    await store.create_api_key(KEY)
    revoked = await store.revoke_api_key(KEY.key_id, "2026-02-01T00:00:00+00:00")
    again = await store.revoke_api_key(KEY.key_id, "2026-03-01T00:00:00+00:00")

    assert revoked.revoked
    assert revoked.revoked_at == "2026-02-01T00:00:00+00:00"
    assert again == revoked
    assert again.mod_revision == revoked.mod_revision
    assert await store.list_api_keys() == (revoked,)


async def test_revoking_an_unknown_key_raises_and_writes_nothing(store: Store) -> None:
    before = (await store.read_prefix("")).revision
    with pytest.raises(UnknownApiKey) as caught:
        await store.revoke_api_key("0123456789abcdef", "2026-02-01T00:00:00+00:00")
    assert caught.value.key_id == "0123456789abcdef"
    assert (await store.read_prefix("")).revision == before


async def test_api_key_changes_are_seen_by_a_watch_on_their_prefix(store: Store) -> None:
    start = (await store.read_prefix(API_KEYS_PREFIX)).revision
    async with store.watch(API_KEYS_PREFIX, after_revision=start) as stream:
        created = await store.create_api_key(KEY)
        revoked = await store.revoke_api_key(KEY.key_id, "2026-02-01T00:00:00+00:00")
        events = await collect(stream, 2)
    assert [(e.kind, e.key, e.revision) for e in events] == [
        (EventKind.PUT, f"{API_KEYS_PREFIX}{KEY.key_id}", created.mod_revision),
        (EventKind.PUT, f"{API_KEYS_PREFIX}{KEY.key_id}", revoked.mod_revision),
    ]


async def test_api_key_ids_are_validated(store: Store) -> None:
    with pytest.raises(InvalidKey):
        await store.create_api_key(ApiKeyRecord("a/b", "acme", "ab" * 32, "now"))
    assert await store.list_api_keys() == ()


# -- small generic keys ----------------------------------------------------------------------


async def test_get_put_delete_round_trip(store: Store) -> None:
    assert await store.get("ca/bundle.pem") is None
    first = await store.put("ca/bundle.pem", b"pem-1")
    second = await store.put("ca/bundle.pem", b"pem-2")
    entry = await store.get("ca/bundle.pem")

    assert second > first
    assert entry is not None
    assert (entry.key, entry.value, entry.create_revision, entry.mod_revision) == (
        "ca/bundle.pem",
        b"pem-2",
        first,
        second,
    )
    assert await store.delete("ca/bundle.pem") is True
    assert await store.delete("ca/bundle.pem") is False
    assert await store.get("ca/bundle.pem") is None


async def test_generic_keys_cannot_touch_reserved_namespaces(store: Store) -> None:
    for key in ("bundle/meta", "nodes/edge-1", "usage/2026-12/acme", "apikeys/0123456789abcdef"):
        with pytest.raises(InvalidKey, match="reserved"):
            await store.put(key, b"forged")
    assert (await store.read_prefix("")).entries == ()


async def test_put_if_absent_has_exactly_one_winner(store: Store) -> None:
    results = await asyncio.gather(
        *(store.put_if_absent("tokens/join/abc", f"claim-{i}".encode()) for i in range(10)),
        return_exceptions=True,
    )
    winners = [i for i, r in enumerate(results) if isinstance(r, int)]
    assert len(winners) == 1
    assert sum(isinstance(r, KeyExists) for r in results) == 9
    entry = await store.get("tokens/join/abc")
    assert entry is not None
    assert entry.value == f"claim-{winners[0]}".encode()


async def test_delete_if_value_consumes_a_token_exactly_once(store: Store) -> None:
    await store.put_if_absent("tokens/join/abc", b"node=edge-1")

    assert await store.delete_if_value("tokens/join/abc", b"node=edge-2") is False
    assert await store.get("tokens/join/abc") is not None
    results = await asyncio.gather(
        *(store.delete_if_value("tokens/join/abc", b"node=edge-1") for _ in range(10))
    )
    assert results.count(True) == 1
    assert await store.get("tokens/join/abc") is None
    assert await store.delete_if_value("tokens/join/missing", b"") is False


# -- watch -----------------------------------------------------------------------------------


async def test_snapshot_then_watch_misses_nothing_and_repeats_nothing(store: Store) -> None:
    await store.put("ca/a", b"1")
    snapshot = await store.read_prefix("ca/")
    assert [(e.key, e.value) for e in snapshot.entries] == [("ca/a", b"1")]
    # Changes between the snapshot and the start of the watch must still be seen.
    r1 = await store.put("ca/b", b"2")
    r2 = await store.put("tokens/x", b"other prefix")
    r3 = await store.delete("ca/a")

    async with store.watch("ca/", after_revision=snapshot.revision) as stream:
        r4 = await store.put("ca/a", b"3")
        events = await collect(stream, 3)

    assert r3 is True
    assert [(e.kind, e.key, e.value) for e in events] == [
        (EventKind.PUT, "ca/b", b"2"),
        (EventKind.DELETE, "ca/a", b""),
        (EventKind.PUT, "ca/a", b"3"),
    ]
    assert events[0].revision == r1
    assert r2 < events[1].revision < r4
    assert events[2].revision == r4


async def test_watch_ends_on_aclose_from_another_task(store: Store) -> None:
    snapshot = await store.read_prefix("")
    stream = store.watch("ca/", after_revision=snapshot.revision)
    await stream.__aenter__()
    seen: list[WatchEvent] = []
    first_seen = asyncio.Event()

    async def consume() -> None:
        async for event in stream:
            seen.append(event)
            first_seen.set()

    consumer = asyncio.create_task(consume())
    await store.put("ca/a", b"1")
    async with asyncio.timeout(5):
        await first_seen.wait()
    await stream.aclose()
    async with asyncio.timeout(5):
        await consumer  # ends normally, no exception
    await stream.aclose()  # idempotent
    assert [e.key for e in seen] == ["ca/a"]


async def test_cancelling_the_consumer_ends_the_watch_cleanly(store: Store) -> None:
    snapshot = await store.read_prefix("")

    async def consume() -> None:
        async with store.watch("ca/", after_revision=snapshot.revision) as stream:
            async for _ in stream:
                pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    # The store is still fully usable, and a new watch works.
    revision = await store.put("ca/after", b"1")
    async with store.watch("ca/", after_revision=revision - 1) as stream:
        (event,) = await collect(stream, 1)
    assert event.key == "ca/after"


async def test_a_consumer_cancelled_at_any_point_of_opening_its_watch_stops(
    store: Store,
) -> None:
    """Cancelled at every step of opening the watch in turn, the consumer always stops (on
    Python 3.11 etcd's client drops a cancellation that arrives as the watch is created)."""
    snapshot = await store.read_prefix("")

    async def consume() -> None:
        async with store.watch("ca/", after_revision=snapshot.revision) as stream:
            async for _ in stream:
                pass

    for steps in range(40):
        consumer = asyncio.create_task(consume())
        for _ in range(steps):
            await asyncio.sleep(0)
        consumer.cancel()
        await asyncio.wait({consumer}, timeout=2.0)
        assert consumer.done(), f"still following its watch when cancelled after {steps} steps"
        assert consumer.cancelled()


async def test_watch_from_compacted_history_raises_watch_compacted(harness: Harness) -> None:
    store: MemoryStore | EtcdStore
    server: EtcdServer | None = None
    if harness.kind == "memory":
        assert isinstance(harness.store, MemoryStore)
        store = harness.store
    else:
        # Its own server: compaction is server-wide and would reach the other tests' watches.
        server = EtcdServer.for_tests()
        server.start()
        store = EtcdStore(server.endpoint, root=harness.root)
        await store.connect()
    try:
        first = await store.put("ca/a", b"0")
        for i in range(1, 4):
            last = await store.put("ca/a", str(i).encode())
        await store.compact(last)

        with pytest.raises(WatchCompacted) as caught:
            async with store.watch("ca/", after_revision=first) as stream:
                await drain(stream, timeout_s=5)
        assert (caught.value.after_revision, caught.value.compacted_revision) == (first, last)
        async with store.watch("ca/", after_revision=last - 1) as stream:
            (event,) = await collect(stream, 1)
        assert (event.revision, event.value) == (last, b"3")
    finally:
        await store.aclose()
        if server is not None:
            server.stop()


# -- unavailability --------------------------------------------------------------------------


async def test_unreachable_store_raises_store_unavailable_naming_the_endpoint(
    harness: Harness,
) -> None:
    store: Store
    watch: WatchStream
    if harness.kind == "memory":
        fake = harness.store
        assert isinstance(fake, MemoryStore)
        await fake.put("ca/a", b"1")
        watch = fake.watch("ca/", after_revision=0)
        await watch.__aenter__()
        fake.set_unavailable()
        store = fake
        endpoint = harness.endpoint
    else:
        # Its own server: stopping the shared one would break the other tests.
        server = EtcdServer.for_tests()
        server.start()
        endpoint = server.endpoint
        real = EtcdStore(endpoint, root=harness.root, timeout_s=2.0)
        await real.connect()
        await real.put("ca/a", b"1")
        store = real
        watch = real.watch("ca/", after_revision=0)
        await watch.__aenter__()
        server.stop()

    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("ca/a")
        assert caught.value.endpoint == endpoint
        assert endpoint in str(caught.value)
        with pytest.raises(StoreUnavailable):
            await store.push_bundle(FILES, expected_revision=0)
        with pytest.raises(StoreUnavailable):
            await drain(watch)
    finally:
        await watch.aclose()
        await store.aclose()
