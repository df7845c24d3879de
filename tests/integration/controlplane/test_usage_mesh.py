"""Mesh-wide budgets on a real etcd and a real node API: real agent sessions report what
their ledgers accounted, the counters add up across nodes, each node's budget file takes
the mesh total, and a tenant whose combined spend crosses its budget gets budget-fallback
routes planned on every node, one that never saw its traffic included; at the month
boundary (an injected wall clock) spend starts at zero everywhere."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.controlplane.conftest import Registry
from tests.support.svids import node_material
from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.agents.identity import SvidStore
from tiermesh.agents.runtime.session import RegistrySession
from tiermesh.agents.usage import Prices, Usage, UsageLedger
from tiermesh.controlplane.api import NodeLoad, NodeRegistration
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.bundle import BundleOutcome
from tiermesh.controlplane.reconciler import Reconciler, ReconcileResult
from tiermesh.controlplane.store import Usage as Counter
from tiermesh.rego import RegorusEngine
from tiermesh.xds import SnapshotCache

pytestmark = pytest.mark.etcd

TD = "mesh.example"
INTERVAL_S = 0.2
PRICES = Prices(backends={"cloud-eu": (1.0, 0.0)}, budgets={"acme": 100.0})
"""1000 prompt tokens on cloud-eu cost 1 USD; acme's budget (the small catalog's) 100 USD."""


DECEMBER = "2026-12"


@dataclass
class Wall:
    """The wall clock the nodes' ledgers and the reconciler tell the month by."""

    now: datetime = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def spend(usd: int) -> Usage:
    return Usage("acme", "cloud-eu", usd * 1000, 0)


@dataclass
class Node:
    node_id: str
    ledger: UsageLedger
    session: RegistrySession
    task: asyncio.Task[None] = field(init=False)

    def spent_in_file(self) -> float:
        return float(json.loads(self.ledger.path.read_text())["acme"]["spent_usd"])

    def seen(self) -> str:
        waiting = [r.seq for r in self.ledger.unacknowledged()]
        return (
            f"{self.node_id}: file {self.spent_in_file()} USD, unacknowledged {waiting}, "
            f"sessions {self.session.sessions}, last error {self.session.last_error}"
        )


@dataclass
class Mesh:
    registry: Registry
    reconciler: Reconciler
    plans: dict[int, BundleOutcome]
    nodes: dict[str, Node]
    wall: Wall

    def exhausted_on(self, result: ReconcileResult, node_id: str) -> bool:
        plan = self.plans[result.number].plans[node_id]
        acme = [route for route in plan.routes if route.match.tenant == "acme"]
        assert acme, "acme has routes on every node"
        flags = {route.budget_exhausted for route in acme}
        assert len(flags) == 1
        return flags.pop()


def material(registry: Registry, node_id: str) -> object:
    return node_material(registry.ca, node_id)


async def wait_until(
    check: Callable[[], object], state: Callable[[], object], timeout_s: float = 10.0
) -> None:
    """Poll ``check``; on timeout fail with ``state()`` (what was seen last)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not check():  # noqa: ASYNC110 - polling files, no event to wait on
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not reached in {timeout_s} s; last seen: {state()}") from None


@pytest.fixture
async def mesh(registry: Registry, tmp_path: Path) -> AsyncIterator[Mesh]:
    plans: dict[int, BundleOutcome] = {}
    wall = Wall()

    async def record(result: ReconcileResult, outcome: BundleOutcome) -> None:
        plans[result.number] = outcome

    current = await registry.store.get_bundle()
    await registry.store.push_bundle(policy_files(), expected_revision=current.revision)
    reconciler = Reconciler(
        registry.store, RegorusEngine, FakeCompiler(), SnapshotCache(), debounce_s=0.05,
        on_plans=record, wall_clock=wall, month_check_s=0.05,
    )  # fmt: skip
    nodes: dict[str, Node] = {}
    for node_id in ("edge-1", "edge-2", "edge-3"):
        store = SvidStore()
        store.update(material(registry, node_id))  # type: ignore[arg-type]
        ledger = UsageLedger(tmp_path / node_id / "budget.json", PRICES, clock=wall)
        session = RegistrySession(
            store,
            NodeRegistration(node_id=node_id, tier="local", region="eu-west", app_port=18080),
            addresses=[registry.api.node_target],
            server_name=control_plane_dns_name(TD),
            measure=_idle,
            interval_s=INTERVAL_S,
            usage=ledger,
        )
        node = Node(node_id, ledger, session)
        node.task = asyncio.create_task(session.run())
        await session.wait_registered(5.0)
        nodes[node_id] = node
    await reconciler.start()
    await reconciler.wait_for(lambda r: r.ok and len(r.nodes) == 3)
    try:
        yield Mesh(registry, reconciler, plans, nodes, wall)
    finally:
        await reconciler.aclose()
        for node in nodes.values():
            node.session.leave()
        await asyncio.gather(*(node.task for node in nodes.values()), return_exceptions=True)


async def _idle() -> NodeLoad:
    return NodeLoad()


async def test_two_nodes_spend_adds_up_and_the_budget_falls_back_on_every_node(
    mesh: Mesh,
) -> None:
    store = mesh.registry.store
    one, two, three = (mesh.nodes[n] for n in ("edge-1", "edge-2", "edge-3"))
    first = mesh.reconciler.last_result
    assert first is not None
    assert not mesh.exhausted_on(first, "edge-3")

    one.ledger.record([spend(30), spend(30)])
    await wait_until(
        lambda: one.spent_in_file() == 60.0 and one.ledger.unreported("acme") == 0, one.seen
    )
    two.ledger.record([spend(20)])
    # A node hears the mesh total with the answer to its own report.
    await wait_until(
        lambda: two.spent_in_file() == 80.0 and two.ledger.unreported("acme") == 0, two.seen
    )
    assert one.spent_in_file() == 60.0
    assert await store.get_usage("acme", month=DECEMBER) == Counter("acme", 80_000, 80_000_000)
    assert one.ledger.unacknowledged() == two.ledger.unacknowledged() == ()
    # Below the budget: the reports re-planned nothing.
    assert mesh.reconciler.reconcile_count == first.number
    assert mesh.reconciler.unchanged_usage_events >= 2

    # Together over the budget, though neither node alone is: every node falls back.
    two.ledger.record([spend(25)])
    crossed = await mesh.reconciler.wait_for(lambda r: r.number > first.number, timeout_s=10)
    assert crossed.ok, crossed.errors
    assert await store.get_usage("acme", month=DECEMBER) == Counter("acme", 105_000, 105_000_000)
    assert mesh.reconciler.budget_crossings == 1
    for node_id in ("edge-1", "edge-2", "edge-3"):
        assert mesh.exhausted_on(crossed, node_id), node_id
    # edge-1 saw 60 USD of traffic; its file carries the mesh's 105 once it hears back.
    one.ledger.record([spend(1)])
    await wait_until(lambda: one.spent_in_file() == 106.0, one.seen)
    # edge-3 never served acme, so its ext_authz has no file; its routes fell back anyway.
    assert not three.ledger.path.exists()


async def test_unacknowledged_reports_survive_a_lost_session(mesh: Mesh) -> None:
    store = mesh.registry.store
    one = mesh.nodes["edge-1"]
    one.ledger.record([spend(5)])
    await wait_until(
        lambda: one.spent_in_file() == 5.0 and one.ledger.unreported("acme") == 0, one.seen
    )

    # The session breaks; what the node accounts meanwhile is reported on the next one.
    one.task.cancel()
    await asyncio.gather(one.task, return_exceptions=True)
    one.ledger.record([spend(7)])
    report = one.ledger.next_report()  # sealed but never delivered
    assert report is not None
    one.ledger.record([spend(1)])
    one.task = asyncio.create_task(one.session.run())
    await wait_until(
        lambda: one.ledger.unreported("acme") == 0 and one.spent_in_file() == 13.0, one.seen
    )
    assert await store.get_usage("acme", month=DECEMBER) == Counter("acme", 13_000, 13_000_000)


async def test_a_budget_spent_last_month_routes_normally_again_after_the_boundary(
    mesh: Mesh,
) -> None:
    store = mesh.registry.store
    one, two = mesh.nodes["edge-1"], mesh.nodes["edge-2"]
    first = mesh.reconciler.last_result
    assert first is not None
    one.ledger.record([spend(60)])
    two.ledger.record([spend(50)])
    crossed = await mesh.reconciler.wait_for(
        lambda r: r.number > first.number and mesh.exhausted_on(r, "edge-3"), timeout_s=10
    )
    await wait_until(lambda: one.ledger.unreported("acme") == 0, one.seen)
    await wait_until(lambda: two.ledger.unreported("acme") == 0, two.seen)
    assert await store.get_usage("acme", month=DECEMBER) == Counter("acme", 110_000, 110_000_000)

    # edge-1 accounts 5 USD just before midnight; it is reported after it, as December's.
    one.ledger.record([spend(5)])
    mesh.wall.now = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    january = await mesh.reconciler.wait_for(
        lambda r: r.number > crossed.number and r.ok, timeout_s=10
    )
    for node_id in ("edge-1", "edge-2", "edge-3"):
        assert not mesh.exhausted_on(january, node_id), node_id
    assert mesh.reconciler.exhausted_tenants == frozenset()

    await wait_until(
        lambda: one.ledger.unacknowledged() == () and one.ledger.unreported("acme") == 0,
        one.seen,
    )
    assert await store.get_usage("acme", month=DECEMBER) == Counter("acme", 115_000, 115_000_000)
    assert (await store.get_usage("acme", month="2027-01")).cost_micro == 0
    # The December acknowledgement brought no mesh total into January's file.
    two.ledger.record([spend(2)])
    await wait_until(
        lambda: two.spent_in_file() == 2.0 and two.ledger.unreported("acme") == 0, two.seen
    )
    assert (await store.get_usage("acme", month="2027-01")).cost_micro == 2_000_000
    assert one.spent_in_file() == 0.0
    assert mesh.reconciler.exhausted_tenants == frozenset()
