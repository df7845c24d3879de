"""The reconciler on a MemoryStore follows the nodes' load reports into EDS health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from tests.unit.compiler.plans import TEST_AUTHZ
from tests.unit.reconciler.policyfiles import SMALL_CATALOG, policy_files
from tiermesh.controlplane.api import NodeLoad, RegisteredNode, Tier
from tiermesh.controlplane.model import NodeSettings
from tiermesh.controlplane.reconciler import (
    Reconciler,
    ReconcileResult,
    default_compiler,
    read_registration,
)
from tiermesh.controlplane.store import MemoryStore, NodeLease, NodeRecord
from tiermesh.rego import RegorusEngine
from tiermesh.xds import SnapshotCache, typeurls

HOST = "gpu-1"
# The small catalog's on-prem backend (in every node's plan), hosted by gpu-1.
CATALOG = SMALL_CATALOG.replace("    tier: private\n", f"    tier: private\n    node: {HOST}\n", 1)
NODES: dict[str, Tier] = {"edge-1": "local", HOST: "private"}


def registration(node_id: str, load: NodeLoad | None) -> RegisteredNode:
    return RegisteredNode(
        node_id=node_id,
        tier=NODES[node_id],
        region="eu-west",
        app_port=10000,
        spiffe_id=f"spiffe://tiermesh.test/node/{node_id}",
        registered_at=datetime.now(UTC),
        load=load,
        load_at=None if load is None else datetime.now(UTC),
    )


class Rig:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.cache = SnapshotCache()
        compiler = default_compiler(lambda _node_id: NodeSettings(app_port=10000, authz=TEST_AUTHZ))
        self.reconciler = Reconciler(
            self.store, RegorusEngine, compiler, self.cache, debounce_s=0.01
        )
        self.leases: dict[str, NodeLease] = {}

    async def report(self, node_id: str, load: NodeLoad) -> ReconcileResult:
        """Write ``load`` into the node's registration; the reconcile that follows."""
        before = self.reconciler.last_result
        number = before.number if before is not None else 0
        await self.store.update_node(self.leases[node_id], registration(node_id, load))
        return await self.reconciler.wait_for(lambda r: r.number > number and r.events > 0)

    def versions(self) -> dict[str, str]:
        return {
            key: snapshot.version for key in NODES if (snapshot := self.cache.get_snapshot(key))
        }

    def endpoint_health(self, node_id: str) -> dict[str, list[int]]:
        snapshot = self.cache.get_snapshot(node_id)
        assert snapshot is not None
        found: dict[str, list[int]] = {}
        for name in snapshot.ordered_names(typeurls.ENDPOINT):
            assignment = snapshot.resource(typeurls.ENDPOINT, name)
            assert isinstance(assignment, endpoint_pb2.ClusterLoadAssignment)
            found[name] = [lb.health_status for e in assignment.endpoints for lb in e.lb_endpoints]
        return found


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    await rig.store.push_bundle(policy_files(CATALOG), expected_revision=0)
    for node_id in NODES:
        rig.leases[node_id] = await rig.store.register_node(
            node_id, registration(node_id, NodeLoad()), ttl_s=30
        )
    await rig.reconciler.start()
    first = await rig.reconciler.wait_for(lambda r: r.bundle_revision == 1)
    assert first.ok, first.errors
    assert set(first.nodes) == set(NODES)
    yield rig
    await rig.reconciler.aclose()
    await rig.store.aclose()


UNKNOWN, UNHEALTHY = health_check_pb2.UNKNOWN, health_check_pb2.UNHEALTHY


async def test_an_unhealthy_node_takes_its_backends_out_of_every_nodes_eds(rig: Rig) -> None:
    healthy = rig.versions()
    served = {node_id: rig.endpoint_health(node_id) for node_id in NODES}
    for node_id in NODES:
        assert served[node_id]["onprem"] == [UNKNOWN]

    down = await rig.report(HOST, NodeLoad(in_flight=2, healthy=False))
    assert down.ok, down.errors
    assert down.unhealthy == (HOST,)
    assert sorted(down.published) == sorted(NODES)
    for node_id in NODES:
        assert rig.endpoint_health(node_id) == {**served[node_id], "onprem": [UNHEALTHY]}

    up = await rig.report(HOST, NodeLoad(in_flight=0, healthy=True))
    assert up.ok, up.errors
    assert up.unhealthy == ()
    assert sorted(up.published) == sorted(NODES)
    assert rig.versions() == healthy
    assert {node_id: rig.endpoint_health(node_id) for node_id in NODES} == served


async def test_load_reports_that_keep_the_health_set_publish_nothing(rig: Rig) -> None:
    healthy = rig.versions()
    for in_flight in (1, 5, 3):
        result = await rig.report(HOST, NodeLoad(in_flight=in_flight, tokens_per_s=12.5))
        assert result.ok, result.errors
        assert (result.published, result.unhealthy) == ((), ())
        assert rig.versions() == healthy

    down = await rig.report(HOST, NodeLoad(healthy=False))
    unhealthy = rig.versions()
    assert down.published
    assert unhealthy != healthy
    for in_flight in (0, 7):
        result = await rig.report(HOST, NodeLoad(in_flight=in_flight, healthy=False))
        assert (result.published, result.unhealthy) == ((), (HOST,))
        assert rig.versions() == unhealthy


async def test_a_node_without_a_load_report_counts_as_healthy(rig: Rig) -> None:
    result = await rig.report("edge-1", NodeLoad(healthy=False))
    assert result.unhealthy == ("edge-1",)
    # edge-1 hosts no backend: nothing it serves, nor anything served to it, changes.
    assert result.published == ()
    await rig.store.update_node(rig.leases[HOST], registration(HOST, None))
    again = await rig.reconciler.wait_for(lambda r: r.number > result.number)
    assert again.unhealthy == ("edge-1",)
    assert rig.endpoint_health(HOST)["onprem"] == [UNKNOWN]


@pytest.mark.parametrize(
    ("document", "healthy"),
    [
        (b'{"id": "n1", "tier": "local", "region": "r"}', True),
        (b'{"id": "n1", "tier": "local", "region": "r", "load": null}', True),
        (b'{"id": "n1", "tier": "local", "region": "r", "load": {"healthy": true}}', True),
        (b'{"id": "n1", "tier": "local", "region": "r", "load": {"healthy": false}}', False),
        (b'{"id": "n1", "tier": "local", "region": "r", "load": {"healthy": 0}}', True),
        (
            b'{"node": {"id": "n1", "tier": "local", "region": "r"}, "load": {"healthy": false}}',
            False,
        ),
    ],
)
def test_read_registration_reads_only_an_explicit_unhealthy_report(
    document: bytes, healthy: bool
) -> None:
    read = read_registration(NodeRecord("n1", document, lease_id=1, mod_revision=1))
    assert (read.node.id, read.healthy) == ("n1", healthy)
