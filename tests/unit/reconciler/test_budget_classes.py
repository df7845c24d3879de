"""A budget crossing re-plans per node class: one evaluation per class, and only the
members of classes whose plan changed are planned, compiled and published again."""

from __future__ import annotations

from tests.unit.reconciler.policyfiles import policy_files
from tests.unit.reconciler.test_incremental import (
    FLEET_CATALOG,
    CountingEngine,
    Rig,
    registration,
    rig,
)
from tiermesh.controlplane.api import usage_month

__all__ = ["rig"]

ACME_SPENT_MICRO = 100_000_000
"""acme's whole monthly budget in the small catalog (exhausted: spent >= budget)."""
ROUTING = "routing/routing.rego"
CLOUD_ONLY = {
    # Only cloud nodes' plans read the budget state: the other classes' plans must not
    # change when acme's budget is spent.
    "_spent(tenant) := true if budget.exhausted(tenant) else := false": (
        '_spent(tenant) := true if {\n\tinput.node.tier == "cloud"\n'
        "\tbudget.exhausted(tenant)\n} else := false"
    ),
    "warnings contains msg if some msg in budget.warnings": (
        'warnings contains msg if {\n\tinput.node.tier == "cloud"\n\tsome msg in budget.warnings\n}'
    ),
}
NODES = {
    "edge-1": ("local", "eu-west"),
    "edge-2": ("local", "eu-west"),
    "cloud-1": ("cloud", "us-east"),
    "cloud-2": ("cloud", "us-east"),
}


def cloud_only_budget_files() -> dict[str, bytes]:
    files = policy_files(FLEET_CATALOG, nodes=None)
    text = files[ROUTING].decode()
    for old, new in CLOUD_ONLY.items():
        assert old in text, old
        text = text.replace(old, new)
    files[ROUTING] = text.encode()
    return files


async def spend_acme(rig: Rig, cost_micro: int) -> None:
    month = usage_month(rig.reconciler._wall_clock())
    await rig.store.add_usage("acme", month=month, cost_micro=cost_micro)


def spent_warnings(rig: Rig, node_id: str) -> bool:
    fleet = rig.reconciler._fleet
    assert fleet is not None
    return any("monthly budget spent" in w.message for w in fleet.warnings.get(node_id, ()))


async def test_a_crossing_replans_only_the_classes_whose_plan_reads_the_budget(
    rig: Rig,
) -> None:
    for node_id, (tier, region) in NODES.items():
        await rig.put(node_id, registration(node_id, tier, region))
    await rig.store.push_bundle(cloud_only_budget_files(), expected_revision=0)
    await rig.reconciler.start()
    first = await rig.settle()
    assert first.ok, first.errors
    fleet = rig.reconciler._fleet
    assert fleet is not None
    snapshots = {key: rig.cache.get_snapshot(key) for key in rig.cache.keys()}  # noqa: SIM118
    plans = dict(fleet.plans)
    evaluations = CountingEngine.evaluations
    incremental = rig.reconciler.incremental_count

    await spend_acme(rig, ACME_SPENT_MICRO)
    crossed = await rig.settle()

    assert crossed.ok, crossed.errors
    assert rig.reconciler.budget_crossings == 1
    assert rig.reconciler.exhausted_tenants == frozenset({"acme"})
    assert rig.reconciler.incremental_count == incremental + 1
    # One evaluation per class (local/eu-west with the static node, cloud/us-east),
    # none per node.
    assert CountingEngine.evaluations == evaluations + 2
    assert crossed.published == ("cloud-1", "cloud-2")
    fleet = rig.reconciler._fleet
    assert fleet is not None
    for node_id in ("edge-1", "edge-2", "static-1"):
        assert rig.cache.get_snapshot(node_id) is snapshots[node_id], node_id
        assert fleet.plans[node_id] is plans[node_id], node_id
        assert not spent_warnings(rig, node_id)
    for node_id in ("cloud-1", "cloud-2"):
        assert fleet.plans[node_id] is not plans[node_id]
        assert spent_warnings(rig, node_id)
    assert rig.cache.get_snapshot("cloud-1") is rig.cache.get_snapshot("cloud-2")
    full, expected = await rig.full()
    assert full.ok, full.errors
    assert rig.versions(rig.cache) == expected
    assert crossed.warnings == full.warnings

    # Back under the budget (the counter deleted): the cloud class's plans as before.
    month = usage_month(rig.reconciler._wall_clock())
    rig.store._apply(puts=(), deletes=[rig.store.layout.usage("acme", month)])
    back = await rig.settle()
    assert back.ok, back.errors
    assert back.published == ("cloud-1", "cloud-2")
    assert rig.reconciler.exhausted_tenants == frozenset()
    for node_id, snapshot in snapshots.items():
        current = rig.cache.get_snapshot(node_id)
        assert current is not None
        assert snapshot is not None
        assert current.version == snapshot.version, node_id


async def test_a_node_the_data_names_is_planned_on_its_own_at_a_crossing(rig: Rig) -> None:
    # gpu-1 hosts a catalog backend: a class of its own, evaluated for itself.
    nodes = {"edge-1": ("local", "eu-west"), "gpu-1": ("private", "eu-west")}
    for node_id, (tier, region) in nodes.items():
        await rig.put(node_id, registration(node_id, tier, region))
    await rig.store.push_bundle(policy_files(FLEET_CATALOG, nodes=None), expected_revision=0)
    await rig.reconciler.start()
    assert (await rig.settle()).ok
    fleet = rig.reconciler._fleet
    assert fleet is not None
    gpu_plan = fleet.plans["gpu-1"]
    evaluations = CountingEngine.evaluations

    await spend_acme(rig, ACME_SPENT_MICRO)
    crossed = await rig.settle()

    assert crossed.ok, crossed.errors
    # The shipped policy warns every plan of a spent budget: every class changed.
    assert set(crossed.published) == {"edge-1", "gpu-1", "static-1"}
    # local/eu-west once for its class, gpu-1 once for itself.
    assert CountingEngine.evaluations == evaluations + 2
    fleet = rig.reconciler._fleet
    assert fleet is not None
    assert fleet.plans["gpu-1"] is not gpu_plan
    assert fleet.plans["gpu-1"].node.id == "gpu-1"
    assert all("edge-1" not in w for w in fleet.plans["gpu-1"].warnings)
    _, expected = await rig.full()
    assert rig.versions(rig.cache) == expected
