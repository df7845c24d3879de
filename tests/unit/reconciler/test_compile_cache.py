"""The compile cache and the per-pass plan memo: shared only where the inputs are equal."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from pydantic import ValidationError

from tests.unit.compiler.plans import TEST_AUTHZ, TEST_BUNDLE
from tests.unit.reconciler.policyfiles import POLICY_DIR, rego_files
from tiermesh.controlplane.api import Catalog, NodeInfo, Plan, TenantUsage, load_catalog
from tiermesh.controlplane.bundle import BundleOutcome, Compiler, evaluate_bundle, evaluate_plan
from tiermesh.controlplane.bundle.evaluate import _PlanShapes
from tiermesh.controlplane.model import NodeSettings
from tiermesh.controlplane.reconciler import CompileCache, default_compiler
from tiermesh.rego import RegorusEngine
from tiermesh.xds import Snapshot, typeurls

DEMO_CATALOG = POLICY_DIR / "data" / "catalog.yaml"
SETTINGS = NodeSettings(app_port=10000, trust_bundle_pem=TEST_BUNDLE, authz=TEST_AUTHZ)


def node(node_id: str) -> NodeInfo:
    return NodeInfo(id=node_id, tier="local", region="eu-west", residency=("eu",))


def demo_files(port: int = 9102) -> dict[str, bytes]:
    files = rego_files()
    catalog = DEMO_CATALOG.read_text().replace("port: 9102", f"port: {port}")
    files["data/catalog.yaml"] = catalog.encode()
    return files


def compiler(cache: CompileCache, settings: Mapping[str, NodeSettings] | None = None) -> Compiler:
    return default_compiler(lambda node_id: (settings or {}).get(node_id, SETTINGS), cache=cache)


def evaluate(
    nodes: list[NodeInfo],
    compile_with: Compiler | None,
    *,
    files: dict[str, bytes] | None = None,
    usage: Mapping[str, TenantUsage] | None = None,
) -> BundleOutcome:
    engine = RegorusEngine()
    try:
        outcome = evaluate_bundle(
            files or demo_files(), engine, nodes=nodes, compiler=compile_with, usage=usage or {}
        )
    finally:
        engine.close()
    assert outcome.ok, outcome.errors
    return outcome


def uncached(plan: Plan, catalog: Catalog) -> Snapshot:
    return compiler(CompileCache(0))(plan, catalog)


def same_resources(a: Snapshot, b: Snapshot) -> bool:
    return a.version == b.version and all(
        a.encoded(type_url) == b.encoded(type_url) for type_url in typeurls.PUSH_ORDER
    )


def test_nodes_in_the_same_situation_share_one_verified_snapshot() -> None:
    cache = CompileCache()
    outcome = evaluate([node("n-1"), node("n-2"), node("n-3")], compiler(cache))
    first, second, third = (outcome.snapshots[n] for n in ("n-1", "n-2", "n-3"))
    assert first is second is third
    assert (cache.misses, cache.hits, len(cache)) == (1, 2, 1)
    catalog = outcome.documents.catalog
    assert catalog is not None
    assert same_resources(third, uncached(outcome.plans["n-3"], catalog))


def test_a_snapshot_depends_on_no_part_of_the_plan_but_routes_and_backends() -> None:
    """What makes sharing sound: the node, violations and warnings change no resource."""
    outcome = evaluate([node("n-1")], None)
    catalog = outcome.documents.catalog
    assert catalog is not None
    plan = outcome.plans["n-1"]
    other = plan.model_copy(
        update={
            "node": NodeInfo(id="elsewhere", tier="cloud", region="us-east"),
            "violations": ("something",),
            "warnings": (),
        }
    )
    assert same_resources(uncached(plan, catalog), uncached(other, catalog))


def test_different_settings_are_a_miss() -> None:
    cache = CompileCache()
    special = {"n-2": NodeSettings(app_port=10001, trust_bundle_pem=TEST_BUNDLE, authz=TEST_AUTHZ)}
    outcome = evaluate([node("n-1"), node("n-2"), node("n-3")], compiler(cache, special))
    snapshots = outcome.snapshots
    assert snapshots["n-1"] is snapshots["n-3"]
    assert snapshots["n-2"].version != snapshots["n-1"].version
    assert (cache.misses, cache.hits) == (2, 1)


def test_a_changed_catalog_is_a_miss_and_an_equal_one_a_hit() -> None:
    cache = CompileCache()
    compile_node = compiler(cache)
    before = evaluate([node("n-1")], compile_node).snapshots["n-1"]
    moved = evaluate([node("n-1")], compile_node, files=demo_files(port=9999))
    assert moved.snapshots["n-1"].version != before.version
    assert (cache.misses, cache.hits, len(cache)) == (2, 0, 1)
    again = evaluate([node("n-1"), node("n-2")], compile_node, files=demo_files(port=9999))
    assert again.snapshots["n-1"] is again.snapshots["n-2"] is moved.snapshots["n-1"]
    assert (cache.misses, cache.hits) == (2, 2)


def test_a_changed_decision_is_a_miss() -> None:
    cache = CompileCache()
    compile_node = compiler(cache)
    fresh = evaluate([node("n-1")], compile_node)
    spent = evaluate(
        [node("n-1")], compile_node, usage={"acme": TenantUsage(spent_usd=1_000_000.0)}
    )
    assert spent.plans["n-1"].routes != fresh.plans["n-1"].routes
    assert spent.snapshots["n-1"] is not fresh.snapshots["n-1"]
    assert cache.misses == 2
    catalog = spent.documents.catalog
    assert catalog is not None
    assert same_resources(spent.snapshots["n-1"], uncached(spent.plans["n-1"], catalog))


def test_a_node_specific_plan_never_gets_another_nodes_snapshot() -> None:
    """The demo catalog pins its local backend to edge-1: that node's plan differs."""
    cache = CompileCache()
    nodes = [node("edge-1"), node("edge-2"), node("n-1")]
    outcome = evaluate(nodes, compiler(cache))
    catalog = outcome.documents.catalog
    assert catalog is not None
    snapshots = outcome.snapshots
    assert snapshots["edge-2"] is snapshots["n-1"]
    assert snapshots["edge-1"].version != snapshots["n-1"].version
    assert outcome.plans["edge-1"].routes != outcome.plans["n-1"].routes
    assert (cache.misses, cache.hits) == (2, 1)
    for node_id, snapshot in snapshots.items():
        assert same_resources(snapshot, uncached(outcome.plans[node_id], catalog)), node_id


def test_plans_of_one_pass_share_their_body_and_keep_their_own_node() -> None:
    outcome = evaluate([node("n-1"), node("n-2")], None)
    first, second = outcome.plans["n-1"], outcome.plans["n-2"]
    assert first.routes is second.routes
    assert first.backends is second.backends
    assert second.node == node("n-2")
    assert second.warnings
    assert all("n-2" in warning for warning in second.warnings)
    engine = RegorusEngine()
    try:
        documents_files = demo_files()
        evaluate_bundle(documents_files, engine, nodes=[], usage={})
        alone, problems = evaluate_plan(engine, node("n-2"))
    finally:
        engine.close()
    assert not problems
    assert alone == second


def test_a_bad_decision_with_a_known_body_fails_as_without_the_memo() -> None:
    outcome = evaluate([node("n-1")], None)
    good = outcome.plans["n-1"].model_dump(mode="json")
    bad = {**good, "node": {"id": "Not A Name", "tier": "moon"}, "warnings": [7]}
    with pytest.raises(ValidationError) as expected:
        Plan.model_validate(bad)
    shapes = _PlanShapes()
    shapes.validate(good)
    with pytest.raises(ValidationError) as memoized:
        shapes.validate(bad)
    assert memoized.value.errors() == expected.value.errors()


def test_equal_catalogs_are_detected_by_content() -> None:
    assert load_catalog(DEMO_CATALOG) == load_catalog(DEMO_CATALOG)


def test_a_miss_and_its_store_hash_the_plan_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashing a plan's routes walks all of it (~0.1 s at 16 000 routes): the key a lookup
    missed with is the key the compiled snapshot is stored under."""
    from tiermesh.controlplane.reconciler import wiring  # noqa: PLC0415 - the class to count

    built: list[object] = []
    original = wiring._Key.__init__

    def counting(self: object, *args: object, **kwargs: object) -> None:
        built.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(wiring._Key, "__init__", counting)
    cache = CompileCache()
    outcome = evaluate([node("n-1")], compiler(cache))
    assert (cache.misses, len(cache)) == (1, 1)
    assert len(built) == 1
    # Stored under that key: the next pass, with equal (not identical) plans, hits it.
    again = evaluate([node("n-2")], compiler(cache))
    assert cache.hits == 1
    assert again.snapshots["n-2"] is outcome.snapshots["n-1"]
