"""The compact plan: the shipped policy's ``compact_plan`` expands to its ``plan``, and
the pipeline takes either answer.

The demo catalog (three tenants of different shapes, cascade routes, budget fallbacks) and
a catalog of many tenants, some of them clones, are evaluated both ways with regorus.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.unit.reconciler.policyfiles import POLICY_DIR, rego_files
from tiermesh.controlplane.api import (
    COMPACT_PLAN_PATH,
    PLAN_PATH,
    CompactPlan,
    NodeInfo,
    Plan,
    PlanInput,
    RouteMatch,
    RoutePlan,
)
from tiermesh.controlplane.bundle import evaluate_plan, read_documents
from tiermesh.controlplane.bundle.findings import Stage
from tiermesh.rego import UNDEFINED, RegorusEngine

NODES = (
    NodeInfo(id="edge-1", tier="local", region="eu-west", residency=("eu",)),
    NodeInfo(id="route-node-1", tier="private", region="eu-west", residency=("eu",)),
    NodeInfo(id="us-cloud", tier="cloud", region="us-east"),
)


def _catalog(clones: int) -> dict[str, Any]:
    catalog: dict[str, Any] = yaml.safe_load((POLICY_DIR / "data" / "catalog.yaml").read_text())
    tenants = list(catalog["tenants"])
    for tenant in list(tenants):
        tenants += [dict(tenant, name=f"{tenant['name']}-{i}") for i in range(clones)]
    # One clone with its own resilience: a route set (and steps) of its own.
    tenants.append(dict(tenants[0], name="zeta", resilience={"timeout_ms": 1234}))
    catalog["tenants"] = tenants
    return catalog


def _engine(catalog: dict[str, Any], usage: dict[str, Any]) -> RegorusEngine:
    files = rego_files()
    files["data/catalog.yaml"] = yaml.safe_dump(catalog).encode()
    documents = read_documents(files)
    data = dict(documents.data)
    data["usage"] = usage
    engine = RegorusEngine()
    engine.load(documents.modules, data)
    return engine


@pytest.fixture(params=[0, 3], ids=["demo", "clones"])
def engine(request: pytest.FixtureRequest) -> Any:
    # acme's budget spent: its routes take the cheap chain, its clones do not.
    usage = {"acme": {"spent_usd": 1000.0}}
    engine = _engine(_catalog(request.param), usage)
    yield engine
    engine.close()


@pytest.mark.parametrize("node", NODES, ids=lambda n: n.id)
def test_compact_plan_expands_to_the_plan(engine: RegorusEngine, node: NodeInfo) -> None:
    request = PlanInput(node=node).model_dump(mode="json")
    expected = Plan.model_validate(engine.evaluate(PLAN_PATH, request))
    compact = CompactPlan.model_validate(engine.evaluate(COMPACT_PLAN_PATH, request))
    expanded = compact.expand()
    assert expanded == expected
    assert expanded.model_dump(mode="json") == expected.model_dump(mode="json")
    assert [r.model_fields_set for r in expanded.routes] == [
        r.model_fields_set for r in expected.routes
    ]
    assert len(compact.route_sets) <= len(compact.tenants)


def test_tenants_of_one_shape_share_a_route_set(engine: RegorusEngine) -> None:
    request = PlanInput(node=NODES[1]).model_dump(mode="json")
    compact = CompactPlan.model_validate(engine.evaluate(COMPACT_PLAN_PATH, request))
    set_of = {entry.tenant: entry.routes for entry in compact.tenants}
    if "globex-0" in set_of:
        assert set_of["globex-0"] == set_of["globex"]
        # acme's spent budget gives it routes of its own, not its clones'.
        assert set_of["acme-0"] != set_of["acme"]
    # zeta's own resilience: a step group no other tenant has, and the route set of the
    # tenants of its shape (acme's unspent clones).
    group_of = {entry.tenant: entry.steps for entry in compact.tenants}
    assert [tenant for tenant, group in group_of.items() if group == group_of["zeta"]] == ["zeta"]
    if "acme-0" in set_of:
        assert set_of["zeta"] == set_of["acme-0"]
        assert group_of["zeta"] != group_of["acme-0"]
    assert set(compact.route_sets) == set(set_of.values())
    assert set(compact.steps) == set(group_of.values())
    assert len({tuple(steps) for steps in compact.steps.values()}) == 1  # the same ids


def test_evaluate_plan_takes_the_compact_plan(engine: RegorusEngine) -> None:
    node = NODES[1]
    plan, findings = evaluate_plan(engine, node)
    assert plan is not None
    request = PlanInput(node=node).model_dump(mode="json")
    assert plan == Plan.model_validate(engine.evaluate(PLAN_PATH, request))
    assert all(f.stage is not Stage.PLAN or "schema" not in f.message for f in findings)


def test_a_policy_without_compact_plan_is_evaluated_at_plan() -> None:
    engine = _engine(_catalog(0), {})
    try:
        node = NODES[0]
        request = PlanInput(node=node).model_dump(mode="json")
        expected = Plan.model_validate(engine.evaluate(PLAN_PATH, request))
    finally:
        engine.close()
    files = rego_files()
    routing = files["routing/routing.rego"].decode()
    files["routing/routing.rego"] = (
        routing.replace("compact_plan :=", "_compact_plan :=")
        .replace("object.remove(compact_plan,", "object.remove(_compact_plan,")
        .encode()
    )
    files["data/catalog.yaml"] = yaml.safe_dump(_catalog(0)).encode()
    documents = read_documents(files)
    data = dict(documents.data)
    data["usage"] = {}
    engine = RegorusEngine()
    try:
        engine.load(documents.modules, data)
        assert engine.evaluate(COMPACT_PLAN_PATH, request) is UNDEFINED
        plan, _ = evaluate_plan(engine, node)
    finally:
        engine.close()
    assert plan == expected


def _compact_json() -> dict[str, Any]:
    step = {
        "backend": "onprem",
        "tier": "private",
        "model": None,
        "degraded": False,
        "timeout_ms": 1000,
        "retries": {"count": 0, "backoff_base_ms": 10, "backoff_max_ms": 10, "retry_on": []},
        "hedge": None,
    }
    template = {
        "name": "public.chat.*",
        "match": {"sensitivity": "public", "task": "chat", "model": "*"},
        "chain": ["s1"],
        "fail_closed": False,
        "budget_exhausted": False,
        "budget_fallback": ["s1"],
        "rate_limit": None,
    }
    return {
        "version": "v1",
        "node": {"id": "n1", "tier": "local", "region": "eu-west"},
        "steps": {"g0": {"s1": step}, "g1": {"s1": dict(step, timeout_ms=2000)}},
        "route_sets": {"a": [template]},
        "tenants": [
            {"tenant": "a", "routes": "a", "steps": "g0"},
            {"tenant": "b", "routes": "a", "steps": "g0"},
        ],
        "backends": [],
        "violations": [],
        "warnings": [],
    }


def test_expansion_names_and_matches_each_tenant() -> None:
    plan = CompactPlan.model_validate(_compact_json()).expand()
    assert [route.name for route in plan.routes] == ["a.public.chat.*", "b.public.chat.*"]
    assert plan.routes[1].match == RouteMatch(
        tenant="b", sensitivity="public", task="chat", model="*"
    )
    assert plan.routes[0].chain is plan.routes[1].chain is plan.routes[1].budget_fallback
    assert isinstance(plan.routes[0], RoutePlan)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["route_sets"]["a"][0]["chain"].append("s2"), "names step 's2'"),
        (
            lambda d: d["tenants"].append({"tenant": "c", "routes": "b", "steps": "g0"}),
            "route set 'b'",
        ),
        (
            lambda d: d["tenants"].append({"tenant": "c", "routes": "a", "steps": "g2"}),
            "step group 'g2'",
        ),
        (
            lambda d: (
                d["steps"]["g1"].pop("s1")
                and d["tenants"].append({"tenant": "c", "routes": "a", "steps": "g1"})
            ),
            "names step 's1', not defined in step group 'g1'",
        ),
        (
            lambda d: d["tenants"].append({"tenant": "Bad.Name", "routes": "a", "steps": "g0"}),
            "pattern",
        ),
        (lambda d: d["route_sets"]["a"][0]["match"].update(sensitivity="secret"), "sensitivity"),
    ],
)
def test_a_broken_compact_plan_is_refused(change: Any, message: str) -> None:
    decision = _compact_json()
    change(decision)
    with pytest.raises(ValidationError, match=message):
        CompactPlan.model_validate(decision)


def test_route_and_plan_have_no_validator_across_fields() -> None:
    """expand() constructs routes from validated parts: sound only while no validator
    reads several fields of a route, its match or the plan."""
    for model in (Plan, RoutePlan, RouteMatch):
        decorators = model.__pydantic_decorators__
        assert not decorators.model_validators, model
        assert not decorators.field_validators, model
