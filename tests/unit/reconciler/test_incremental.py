"""Node events reconciled incrementally give exactly the snapshots a full reconcile gives,
and a join re-plans and re-publishes only the joining node."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest

from tests.unit.compiler.plans import TEST_AUTHZ, TEST_BUNDLE
from tests.unit.reconciler.policyfiles import SMALL_CATALOG, policy_files
from tiermesh.controlplane.api import NodeInfo, usage_month
from tiermesh.controlplane.model import MeshTlsSettings, NodeSettings
from tiermesh.controlplane.reconciler import (
    CompileCache,
    Reconciler,
    ReconcileResult,
    default_compiler,
)
from tiermesh.controlplane.store import ManualClock, MemoryStore, NodeLease
from tiermesh.rego import JSONValue, RegorusEngine, Undefined
from tiermesh.xds import SnapshotCache

TD = "fleet.test"
DEBOUNCE_S = 0.1
POOL = ("edge-1", "edge-2", "edge-3", "edge-4", "gpu-1", "gpu-2", "cloud-gw-1", "static-1")
STATIC = NodeInfo(id="static-1", tier="local", region="eu-west")
GPU = f"spiffe://{TD}/node/gpu-1"
# onprem is hosted by gpu-1 (health) and reached over mTLS by its SPIFFE ID (mesh
# callers); gpu-1 is named by the data, so it is a node class of its own.
FLEET_CATALOG = SMALL_CATALOG.replace(
    "    endpoint: {host: 127.0.0.1, port: 9001}\n",
    f"    node: gpu-1\n    endpoint: {{host: 10.0.0.9, port: 8443, tls: true}}\n"
    f"    spiffe_id: {GPU}\n",
    1,
)
assert FLEET_CATALOG != SMALL_CATALOG


def sid(node_id: str) -> str:
    return f"spiffe://{TD}/node/{node_id}"


class CountingEngine(RegorusEngine):
    """The real engine, counting policy evaluations across instances."""

    evaluations = 0

    def evaluate(self, path: str, input: JSONValue = None) -> JSONValue | Undefined:
        CountingEngine.evaluations += 1
        return super().evaluate(path, input)


@dataclass
class Fleet:
    """Registrations, app ports and mesh nodes the compiler settings read."""

    ports: dict[str, int] = field(default_factory=dict)
    mesh: set[str] = field(default_factory=lambda: {"gpu-1", "gpu-2"})

    def settings_for(self, node_id: str) -> NodeSettings:
        mesh = None
        if node_id in self.mesh:
            peers = tuple(sid(other) for other in POOL if other != node_id)
            mesh = MeshTlsSettings(
                inbound_port=8443, model_port=8081, trust_domain=TD, allowed_peers=peers
            )
        return NodeSettings(
            app_port=self.ports.get(node_id, 10000),
            authz=TEST_AUTHZ,
            trust_bundle_pem=TEST_BUNDLE,
            mesh=mesh,
        )


def registration(
    node_id: str, tier: str, region: str, *, healthy: bool = True, app_port: int = 10000
) -> bytes:
    """A registration; ``app_port`` as the registry keeps it (the reconciler reads it only
    through its digest, the compiler through its settings)."""
    document: dict[str, object] = {
        "id": node_id,
        "tier": tier,
        "region": region,
        "app_port": app_port,
    }
    if not healthy:
        document["load"] = {"healthy": False}
    return json.dumps(document).encode()


class Rig:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.store = MemoryStore(clock=self.clock)
        self.cache = SnapshotCache()
        self.fleet = Fleet()
        self.reconciler = self.make(self.cache, self.clock)
        self.leases: dict[str, NodeLease] = {}

    def make(self, cache: SnapshotCache, clock: ManualClock | None = None) -> Reconciler:
        compiler = default_compiler(self.fleet.settings_for, cache=CompileCache())
        return Reconciler(
            self.store,
            CountingEngine,
            compiler,
            cache,
            debounce_s=DEBOUNCE_S,
            clock=clock,
            static_nodes=[STATIC],
        )

    async def put(self, node_id: str, value: bytes) -> None:
        lease = self.leases.get(node_id)
        if lease is None:
            self.leases[node_id] = await self.store.register_node(node_id, value, ttl_s=3600)
        else:
            await self.store.update_node(lease, value)

    async def leave(self, node_id: str) -> None:
        lease = self.leases.pop(node_id, None)
        if lease is not None:
            await self.store.revoke_lease(lease)

    async def settle(self) -> ReconcileResult:
        """Run the clock until reconciles stop (bounded); the latest result."""
        async with asyncio.timeout(20):
            while True:
                before = self.reconciler.reconcile_count
                for _ in range(12):
                    for _ in range(5):
                        await asyncio.sleep(0)
                    self.clock.advance(DEBOUNCE_S)
                    await asyncio.sleep(0.003)
                if self.reconciler.reconcile_count == before and not self.reconciler._wake.is_set():
                    assert self.reconciler.last_result is not None
                    return self.reconciler.last_result

    def versions(self, cache: SnapshotCache) -> dict[str, str]:
        found = {key: cache.get_snapshot(key) for key in cache.keys()}  # noqa: SIM118
        return {key: s.version for key, s in found.items() if s is not None}

    async def full(self) -> tuple[ReconcileResult, dict[str, str]]:
        """What a fresh reconciler's full reconcile of the store gives."""
        cache = SnapshotCache()
        fresh = self.make(cache)
        result = await fresh.reconcile_now()
        await fresh.aclose()
        return result, self.versions(cache)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    yield rig
    await rig.reconciler.aclose()


async def start(rig: Rig, nodes: Mapping[str, tuple[str, str]]) -> ReconcileResult:
    for node_id, (tier, region) in nodes.items():
        await rig.put(node_id, registration(node_id, tier, region))
    await rig.store.push_bundle(policy_files(FLEET_CATALOG, nodes=None), expected_revision=0)
    await rig.reconciler.start()
    result = await rig.settle()
    assert result.ok, result.errors
    return result


async def random_change(rig: Rig, rng: random.Random) -> str:
    """One random node event (or a budget crossing); a description for failures."""
    node_id = rng.choice([n for n in POOL if n != "static-1"] + ["static-1"])
    op = rng.choice(("join", "join", "health", "leave", "ports", "garbage", "budget"))
    tier = rng.choice(("local", "local", "private", "cloud"))
    region = rng.choice(("eu-west", "us-east"))
    port = rig.fleet.ports.get(node_id, 10000)
    if op == "join":
        await rig.put(node_id, registration(node_id, tier, region, app_port=port))
    elif op == "health":
        healthy = rng.random() < 0.5
        await rig.put(node_id, registration(node_id, tier, region, healthy=healthy, app_port=port))
    elif op == "leave":
        await rig.leave(node_id)
        rig.fleet.ports.pop(node_id, None)
    elif op == "ports":
        port = rng.choice((10000, 10100, 10200))
        rig.fleet.ports[node_id] = port
        await rig.put(node_id, registration(node_id, tier, region, app_port=port))
    elif op == "garbage":
        await rig.put(node_id, b'{"tier": "nowhere"}')
    else:
        month = usage_month(rig.reconciler._wall_clock())
        await rig.store.add_usage("acme", month=month, cost_micro=rng.choice((1, 60_000_000)))
    return f"{op} {node_id} {tier} {region}"


@pytest.mark.parametrize("seed", range(12))
async def test_random_node_events_give_the_snapshots_of_a_full_reconcile(
    rig: Rig, seed: int
) -> None:
    rng = random.Random(seed)
    await start(rig, {"edge-1": ("local", "eu-west"), "gpu-1": ("private", "eu-west")})
    history: list[str] = []
    for _ in range(10):
        for _ in range(rng.choice((1, 1, 2, 3))):
            history.append(await random_change(rig, rng))
        result = await rig.settle()
        full, expected = await rig.full()
        assert result.ok == full.ok, (history, result.errors, full.errors)
        if full.ok:
            assert rig.versions(rig.cache) == expected, history
            assert result.nodes == full.nodes, history
            assert result.unhealthy == full.unhealthy, history
            assert result.skipped == full.skipped, history
    assert rig.reconciler.incremental_count > 0


async def test_a_join_replans_and_publishes_only_the_joining_node(rig: Rig) -> None:
    # No inbound mesh listeners: a caller joining changes no other node's settings.
    rig.fleet.mesh = set()
    nodes = {f"edge-{i}": ("local", "eu-west") for i in range(1, 4)}
    await start(rig, {**nodes, "gpu-1": ("private", "eu-west")})
    before = {key: rig.cache.get_snapshot(key) for key in rig.cache.keys()}  # noqa: SIM118
    evaluations = CountingEngine.evaluations
    incremental = rig.reconciler.incremental_count

    await rig.put("edge-4", registration("edge-4", "local", "eu-west"))
    result = await rig.settle()

    assert result.ok, result.errors
    assert rig.reconciler.incremental_count == incremental + 1
    assert result.published == ("edge-4",)
    assert "edge-4" in result.nodes
    # Its class (local, eu-west) was planned before: no policy evaluation at all.
    assert CountingEngine.evaluations == evaluations
    for key, snapshot in before.items():
        assert rig.cache.get_snapshot(key) is snapshot, key
    # The joining node shares its class's compiled snapshot.
    assert rig.cache.get_snapshot("edge-4") is rig.cache.get_snapshot("edge-2")
    _, expected = await rig.full()
    assert rig.versions(rig.cache) == expected


async def test_a_join_of_a_new_class_evaluates_that_class_alone(rig: Rig) -> None:
    await start(rig, {"edge-1": ("local", "eu-west"), "edge-2": ("local", "eu-west")})
    evaluations = CountingEngine.evaluations
    await rig.put("edge-3", registration("edge-3", "cloud", "us-east"))
    result = await rig.settle()
    assert result.ok, result.errors
    assert result.published == ("edge-3",)
    # The class's first member for real, and the class's shared plan.
    assert CountingEngine.evaluations == evaluations + 2


async def test_a_callee_gets_its_listener_again_when_a_caller_joins_or_leaves(rig: Rig) -> None:
    await start(rig, {"gpu-1": ("private", "eu-west"), "cloud-gw-1": ("cloud", "eu-west")})
    alone = rig.cache.get_snapshot("gpu-1")
    await rig.put("edge-2", registration("edge-2", "local", "eu-west"))
    joined = await rig.settle()
    assert joined.ok, joined.errors
    # edge-2's plan calls gpu-1 over mTLS: gpu-1's inbound listener now admits it.
    assert set(joined.published) == {"edge-2", "gpu-1"}
    assert rig.cache.get_snapshot("gpu-1") is not alone
    await rig.leave("edge-2")
    left = await rig.settle()
    assert left.removed == ("edge-2",)
    assert left.published == ("gpu-1",)
    snapshot = rig.cache.get_snapshot("gpu-1")
    assert snapshot is not None
    assert alone is not None
    assert snapshot.version == alone.version


async def test_a_health_flip_recompiles_only_the_users_of_the_nodes_backends(rig: Rig) -> None:
    await start(
        rig,
        {
            "edge-1": ("local", "eu-west"),
            "gpu-1": ("private", "eu-west"),
            "cloud-gw-1": ("cloud", "us-east"),
        },
    )
    await rig.put("gpu-1", registration("gpu-1", "private", "eu-west", healthy=False))
    result = await rig.settle()
    assert result.ok, result.errors
    assert result.unhealthy == ("gpu-1",)
    _, expected = await rig.full()
    assert rig.versions(rig.cache) == expected
    # Every plan with onprem changed its endpoints; the static node's too.
    assert set(result.published) <= {"edge-1", "gpu-1", "cloud-gw-1", "static-1"}
    assert "edge-1" in result.published


async def test_a_bundle_push_after_node_events_reconciles_every_node(rig: Rig) -> None:
    await start(rig, {"edge-1": ("local", "eu-west")})
    await rig.put("edge-2", registration("edge-2", "local", "eu-west"))
    await rig.settle()
    count = rig.reconciler.incremental_count
    catalog = FLEET_CATALOG.replace("port: 9002", "port: 9012")
    await rig.store.push_bundle(policy_files(catalog, nodes=None), expected_revision=1)
    result = await rig.settle()
    assert result.ok, result.errors
    assert result.bundle_revision == 2
    assert rig.reconciler.incremental_count == count
    assert set(result.published) == {"edge-1", "edge-2", "static-1"}


async def test_settings_changed_recompiles_the_node_and_its_callees(rig: Rig) -> None:
    await start(
        rig,
        {
            "edge-1": ("local", "eu-west"),
            "edge-2": ("local", "eu-west"),
            "gpu-1": ("private", "eu-west"),
        },
    )
    count = rig.reconciler.incremental_count
    # A port moved where the registration digest does not see it: told by name.
    rig.fleet.ports["edge-1"] = 10300
    rig.reconciler.settings_changed("edge-1")
    result = await rig.settle()
    assert result.ok, result.errors
    assert rig.reconciler.incremental_count == count + 1
    # edge-1's snapshot changed; gpu-1 (which edge-1's plan calls) was compiled again
    # and is unchanged; edge-2 was not touched.
    assert result.published == ("edge-1",)
    _, expected = await rig.full()
    assert rig.versions(rig.cache) == expected
    # gpu-1 becomes a mesh node: only a callee's own settings tell.
    rig.fleet.mesh = {"gpu-1"}
    rig.fleet.ports["gpu-1"] = 10400
    rig.reconciler.settings_changed("gpu-1")
    second = await rig.settle()
    assert second.published == ("gpu-1",)
    _, expected = await rig.full()
    assert rig.versions(rig.cache) == expected
    # None: every node's settings may have changed; a full reconcile.
    rig.reconciler.settings_changed()
    third = await rig.settle()
    assert third.ok
    assert rig.reconciler.incremental_count == count + 2
