"""Which ``nodes/`` events schedule a reconcile: changes to what reconciles read, not load."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.reconciler.conftest import DEBOUNCE_S, MONTH, STATIC, Rig
from tiermesh.controlplane.api import NodeLoad, RegisteredNode, Tier
from tiermesh.controlplane.reconciler import ReconcileResult, registration_digest
from tiermesh.controlplane.store import NodeLease

REGISTERED_AT = datetime(2025, 1, 1, tzinfo=UTC)
NODES = ("edge-1", "edge-2", "edge-3")


def registered(
    node_id: str,
    load: NodeLoad | None = None,
    *,
    tier: Tier = "local",
    region: str = "eu-west",
    app_port: int = 10000,
    seconds: int = 0,
) -> RegisteredNode:
    """A registration as the registry stores it; ``seconds`` after registering for load."""
    return RegisteredNode(
        node_id=node_id,
        tier=tier,
        region=region,
        app_port=app_port,
        spiffe_id=f"spiffe://tiermesh.test/node/{node_id}",
        registered_at=REGISTERED_AT,
        load=load,
        load_at=None if load is None else REGISTERED_AT + timedelta(seconds=seconds),
    )


async def started(rig: Rig) -> dict[str, NodeLease]:
    """Register :data:`NODES`, push a bundle, start the reconciler and let it settle."""
    leases = {
        node_id: await rig.store.register_node(node_id, registered(node_id), ttl_s=3600)
        for node_id in NODES
    }
    await rig.push()
    await rig.reconciler.start()
    first = await rig.settle()
    assert first.ok, first.errors
    assert first.nodes == (*NODES, STATIC.id)
    return leases


async def quiet(rig: Rig, *, unchanged: int | None = None) -> None:
    """Wait (bounded) for ``unchanged`` dropped node events, then run the clock well past
    the debounce's longest delay, yielding to the reconciler all along."""
    async with asyncio.timeout(5):
        while unchanged is not None and rig.reconciler.unchanged_node_events < unchanged:  # noqa: ASYNC110 - a counter, no event to wait on
            await asyncio.sleep(0.001)
    for _ in range(30):
        rig.clock.advance(DEBOUNCE_S)
        await asyncio.sleep(0.002)


async def changed(rig: Rig, count: int) -> ReconcileResult:
    """The reconcile that a change made after ``count`` reconciles schedules."""
    result = await rig.settle()
    assert result.number == count + 1
    assert result.events >= 1
    return result


async def test_load_only_reports_schedule_no_reconcile(rig: Rig) -> None:
    leases = await started(rig)
    count = rig.reconciler.reconcile_count
    for second in range(1, 11):
        for node_id in NODES:
            load = NodeLoad(in_flight=second, queue_depth=second % 3, tokens_per_s=second * 1.5)
            await rig.store.update_node(leases[node_id], registered(node_id, load, seconds=second))
    await quiet(rig, unchanged=10 * len(NODES))
    assert rig.reconciler.reconcile_count == count
    assert rig.reconciler.unchanged_node_events == 10 * len(NODES)


async def test_a_first_load_report_that_says_healthy_schedules_no_reconcile(rig: Rig) -> None:
    leases = await started(rig)
    count = rig.reconciler.reconcile_count
    await rig.store.update_node(leases["edge-1"], registered("edge-1", NodeLoad(), seconds=1))
    await quiet(rig, unchanged=1)
    assert rig.reconciler.reconcile_count == count


async def test_a_health_flip_reconciles_each_way(rig: Rig) -> None:
    leases = await started(rig)
    lease = leases["edge-2"]
    count = rig.reconciler.reconcile_count
    await rig.store.update_node(lease, registered("edge-2", NodeLoad(healthy=False), seconds=1))
    down = await changed(rig, count)
    assert down.unhealthy == ("edge-2",)

    # More load while still unhealthy: nothing to do.
    await rig.store.update_node(
        lease, registered("edge-2", NodeLoad(in_flight=4, healthy=False), seconds=2)
    )
    await quiet(rig, unchanged=1)
    assert rig.reconciler.reconcile_count == down.number

    await rig.store.update_node(lease, registered("edge-2", NodeLoad(in_flight=4), seconds=3))
    up = await changed(rig, down.number)
    assert up.unhealthy == ()


@pytest.mark.parametrize(
    "change",
    [{"tier": "private"}, {"region": "us-east"}, {"app_port": 10001}],
    ids=["tier", "region", "app-port"],
)
async def test_a_registration_change_reconciles(rig: Rig, change: dict[str, object]) -> None:
    leases = await started(rig)
    count = rig.reconciler.reconcile_count
    load = NodeLoad(in_flight=1)
    document = registered("edge-3", load, seconds=1).model_copy(update=change)
    await rig.store.update_node(leases["edge-3"], document)
    result = await changed(rig, count)
    assert result.ok, result.errors
    assert rig.reconciler.unchanged_node_events == 0


async def test_a_new_node_and_a_goodbye_reconcile(rig: Rig) -> None:
    await started(rig)
    count = rig.reconciler.reconcile_count
    lease = await rig.store.register_node("edge-4", registered("edge-4"), ttl_s=3600)
    joined = await changed(rig, count)
    assert "edge-4" in joined.nodes
    assert "edge-4" in joined.published

    await rig.store.revoke_lease(lease)
    left = await changed(rig, joined.number)
    assert "edge-4" not in left.nodes
    assert left.removed == ("edge-4",)

    # The same registration again is a new node, not a repeat of the one that left.
    await rig.store.register_node("edge-4", registered("edge-4"), ttl_s=3600)
    back = await changed(rig, left.number)
    assert "edge-4" in back.nodes


async def test_an_unreadable_registration_is_still_skipped(rig: Rig) -> None:
    leases = await started(rig)
    count = rig.reconciler.reconcile_count
    await rig.store.update_node(leases["edge-1"], b'{"node_id": "edge-1", "tier": "sky"}')
    broken = await changed(rig, count)
    assert broken.skipped == ("edge-1",)
    assert "edge-1" not in broken.nodes

    # Unreadable in another way (a JSON array; the store takes only JSON).
    await rig.store.register_node("odd-1", b'["edge", "local"]', ttl_s=3600)
    odd = await changed(rig, broken.number)
    assert odd.skipped == ("edge-1", "odd-1")

    await rig.store.update_node(leases["edge-1"], registered("edge-1", NodeLoad(), seconds=1))
    mended = await changed(rig, odd.number)
    assert mended.skipped == ("odd-1",)
    assert "edge-1" in mended.nodes


async def test_after_a_compacted_watch_the_digests_come_from_the_resync(rig: Rig) -> None:
    leases = await started(rig)
    count = rig.reconciler.reconcile_count
    rig.store.set_unavailable(True)
    await asyncio.sleep(0.01)
    rig.store.set_unavailable(False)
    # Missed by the broken watch and compacted away: only the resync can see these.
    await rig.store.update_node(leases["edge-1"], registered("edge-1", tier="private"))
    await rig.store.update_node(leases["edge-2"], registered("edge-2", NodeLoad(healthy=False)))
    await rig.store.compact(rig.store.revision)
    resynced = await changed(rig, count)
    assert resynced.unhealthy == ("edge-2",)

    # Load on top of what the resync read: nothing to do.
    await rig.store.update_node(
        leases["edge-1"], registered("edge-1", NodeLoad(in_flight=3), tier="private", seconds=5)
    )
    await rig.store.update_node(
        leases["edge-2"], registered("edge-2", NodeLoad(in_flight=3, healthy=False), seconds=5)
    )
    await quiet(rig, unchanged=2)
    assert rig.reconciler.reconcile_count == resynced.number

    await rig.store.update_node(leases["edge-2"], registered("edge-2", NodeLoad(), seconds=6))
    healed = await changed(rig, resynced.number)
    assert healed.unhealthy == ()


async def test_usage_below_the_budget_triggers_nothing_and_is_read_by_the_next_reconcile(
    rig: Rig,
) -> None:
    leases = await started(rig)
    count = rig.reconciler.reconcile_count
    await rig.store.add_usage("acme", month=MONTH, cost_micro=60_000_000)  # the budget is 100 USD
    await quiet(rig)
    assert rig.reconciler.reconcile_count == count

    await rig.store.update_node(leases["edge-1"], registered("edge-1", NodeLoad(healthy=False)))
    result = await changed(rig, count)
    assert not any("monthly budget spent" in w.message for w in result.warnings)
    assert rig.reconciler.unchanged_usage_events == 1


@pytest.mark.parametrize(
    ("before", "after", "same"),
    [
        (registered("n1"), registered("n1", NodeLoad(in_flight=9), seconds=3), True),
        (
            registered("n1", NodeLoad(queue_depth=1), seconds=1),
            registered("n1", NodeLoad(tokens_per_s=2.0), seconds=2),
            True,
        ),
        (registered("n1"), registered("n1", NodeLoad(healthy=False), seconds=1), False),
        (registered("n1"), registered("n1", tier="cloud"), False),
        (registered("n1"), registered("n1", app_port=10001), False),
        (registered("n1"), registered("n1").model_copy(update={"residency": ("us",)}), False),
    ],
    ids=["load", "load-to-load", "health", "tier", "port", "residency"],
)
def test_registration_digest(before: RegisteredNode, after: RegisteredNode, same: bool) -> None:
    digests = (
        registration_digest(before.model_dump_json().encode()),
        registration_digest(after.model_dump_json().encode()),
    )
    assert (digests[0] == digests[1]) is same


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", b'"edge-1"', b"\xff\xfe", b"[" * 100_000],
    ids=["text", "array", "string", "binary", "deep"],
)
def test_registration_digest_of_a_document_that_is_no_object(raw: bytes) -> None:
    assert registration_digest(raw) == registration_digest(raw)
    assert registration_digest(raw) != registration_digest(raw + b" ")
