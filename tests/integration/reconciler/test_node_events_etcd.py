"""Node events on a real etcd with real time: load reports reconcile nothing, changes do."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import policy_files
from tests.unit.reconciler.test_node_events import registered
from tiermesh.controlplane.api import NodeLoad
from tiermesh.controlplane.reconciler import Reconciler, ReconcileResult
from tiermesh.controlplane.store import EtcdStore, NodeLease
from tiermesh.procs.etcd import EtcdServer
from tiermesh.rego import RegorusEngine
from tiermesh.xds import SnapshotCache

pytestmark = pytest.mark.etcd

NODES = ("edge-1", "edge-2")
QUIET_S = 0.5
"""Real seconds with no reconcile that count as none coming (10 debounce periods)."""


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@dataclass
class Rig:
    store: EtcdStore
    reconciler: Reconciler
    leases: dict[str, NodeLease]

    async def next_change(self, after: int) -> ReconcileResult:
        """The reconcile after number ``after`` (one an event scheduled)."""
        result = await self.reconciler.wait_for(lambda r: r.number > after, timeout_s=5)
        assert result.events >= 1
        return result


@pytest.fixture
async def rig(etcd_server: EtcdServer) -> AsyncIterator[Rig]:
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    async with EtcdStore(etcd_server.endpoint, root=root) as store:
        leases = {
            node_id: await store.register_node(node_id, registered(node_id), ttl_s=60)
            for node_id in NODES
        }
        await store.push_bundle(policy_files(), expected_revision=0)
        reconciler = Reconciler(
            store, RegorusEngine, FakeCompiler(), SnapshotCache(), debounce_s=0.05
        )
        await reconciler.start()
        first = await reconciler.wait_for(lambda r: r.bundle_revision == 1, timeout_s=5)
        assert first.ok, first.errors
        yield Rig(store, reconciler, leases)
        await reconciler.aclose()


async def test_load_reports_reconcile_nothing_and_a_health_flip_does(rig: Rig) -> None:
    count = rig.reconciler.reconcile_count
    for second in range(1, 6):
        for node_id in NODES:
            load = NodeLoad(in_flight=second, tokens_per_s=second * 2.5)
            await rig.store.update_node(
                rig.leases[node_id], registered(node_id, load, seconds=second)
            )
    async with asyncio.timeout(5):
        while rig.reconciler.unchanged_node_events < 5 * len(NODES):  # noqa: ASYNC110 - a counter, no event to wait on
            await asyncio.sleep(0.01)
    await asyncio.sleep(QUIET_S)
    assert rig.reconciler.reconcile_count == count

    down = registered("edge-2", NodeLoad(in_flight=1, healthy=False), seconds=6)
    await rig.store.update_node(rig.leases["edge-2"], down)
    result = await rig.next_change(count)
    assert result.unhealthy == ("edge-2",)


async def test_identity_changes_joins_goodbyes_and_unreadable_ones_reconcile(rig: Rig) -> None:
    count = rig.reconciler.reconcile_count
    moved = registered("edge-1", NodeLoad(in_flight=2), tier="private", region="us-east", seconds=1)
    await rig.store.update_node(rig.leases["edge-1"], moved)
    result = await rig.next_change(count)
    assert result.ok, result.errors

    lease = await rig.store.register_node("edge-3", registered("edge-3"), ttl_s=60)
    joined = await rig.next_change(result.number)
    assert "edge-3" in joined.nodes

    await rig.store.revoke_lease(lease)
    left = await rig.next_change(joined.number)
    assert left.removed == ("edge-3",)

    await rig.store.update_node(rig.leases["edge-2"], b'{"node_id": "edge-2", "tier": "sky"}')
    broken = await rig.next_change(left.number)
    assert broken.skipped == ("edge-2",)
