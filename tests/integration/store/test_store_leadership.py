"""The leadership part of the Store contract (campaign, fenced writes), run against the
in-memory fake, one etcd member and a 3-member cluster alike."""

from __future__ import annotations

import pytest

from tiermesh.controlplane.store import LeaseExpired, NotLeader, Store

from .conftest import Harness

KEY = "leader/controlplane"


async def test_one_campaigner_wins_and_only_its_fence_writes(store: Store) -> None:
    first = await store.campaign(KEY, b"replica-a", 30)
    second = await store.campaign(KEY, b"replica-b", 30)

    assert first is not None
    assert second is None
    held = await store.get(KEY)
    assert held is not None
    assert (held.value, held.create_revision) == (b"replica-a", first.token)
    revision = await store.put_fenced(first, "leader/state/x", b"1")
    entry = await store.get("leader/state/x")
    assert entry is not None
    assert (entry.value, entry.mod_revision) == (b"1", revision)
    await store.revoke_lease(first.lease)


async def test_a_resigned_leaders_writes_are_refused_by_the_store(store: Store) -> None:
    old = await store.campaign(KEY, b"replica-a", 30)
    assert old is not None
    await store.revoke_lease(old.lease)  # resign: the key goes with the lease
    assert await store.get(KEY) is None

    new = await store.campaign(KEY, b"replica-b", 30)
    assert new is not None
    assert new.token > old.token
    with pytest.raises(NotLeader, match="replica-a"):
        await store.put_fenced(old, "leader/state/x", b"from the old leader")
    assert await store.get("leader/state/x") is None
    await store.put_fenced(new, "leader/state/x", b"from the new leader")
    await store.revoke_lease(new.lease)


async def test_the_same_holder_in_a_later_term_does_not_revive_its_old_fence(
    store: Store,
) -> None:
    """The create revision is the token: a value compare alone would let a paused process
    write with the fence of a term that ended, because it campaigns with the same value."""
    old = await store.campaign(KEY, b"replica-a", 30)
    assert old is not None
    await store.revoke_lease(old.lease)
    again = await store.campaign(KEY, b"replica-a", 30)
    assert again is not None
    assert again.token > old.token

    with pytest.raises(NotLeader):
        await store.put_fenced(old, "leader/state/x", b"stale")
    assert await store.get("leader/state/x") is None
    await store.revoke_lease(again.lease)


async def test_an_expired_lease_deposes_the_leader(harness: Harness) -> None:
    store = harness.store
    fence = await store.campaign(KEY, b"replica-a", 1)
    assert fence is not None
    await harness.let_time_pass(2.5)

    async def gone() -> bool:
        return await store.get(KEY) is None

    await harness.eventually(gone)
    with pytest.raises(LeaseExpired):
        await store.refresh_lease(fence.lease)
    successor = await store.campaign(KEY, b"replica-b", 30)
    assert successor is not None
    with pytest.raises(NotLeader):
        await store.put_fenced(fence, "leader/state/x", b"late")
    await store.revoke_lease(successor.lease)


async def test_legacy_usage_is_adopted_only_under_a_holding_fence(
    harness: Harness, store: Store
) -> None:
    await harness.put_raw("usage/acme", b'{"tokens": 40, "cost_micro": 4000}')
    old = await store.campaign(KEY, b"replica-a", 30)
    assert old is not None
    await store.revoke_lease(old.lease)
    new = await store.campaign(KEY, b"replica-b", 30)
    assert new is not None

    with pytest.raises(NotLeader):
        await store.adopt_legacy_usage(month="2026-12", fence=old)
    assert (await store.get_usage("acme", month="2026-12")).tokens == 0
    assert [e.key for e in (await store.read_prefix("usage/")).entries] == ["usage/acme"]

    adopted = await store.adopt_legacy_usage(month="2026-12", fence=new)
    assert [(u.tenant, u.tokens) for u in adopted] == [("acme", 40)]
    await store.revoke_lease(new.lease)


async def test_campaign_checks_its_arguments(store: Store) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await store.campaign(KEY, b"x", 0)
