"""The shipped policy's compact plan, on every embedded engine, expands to the plan the
same engine answers (regorus, and the OPA Go engine as the oracle)."""

from __future__ import annotations

import pytest

from tests.integration.rego.conftest import LoadPolicies
from tiermesh.controlplane.api import (
    COMPACT_PLAN_PATH,
    PLAN_PATH,
    Catalog,
    CompactPlan,
    NodeInfo,
    Plan,
    PlanInput,
    TenantUsage,
)
from tiermesh.rego import JSONValue


@pytest.mark.parametrize(
    "node",
    [
        NodeInfo(id="edge-1", tier="local", region="eu-west", residency=("eu",)),
        NodeInfo(id="gpu-1", tier="private", region="eu-west"),
    ],
    ids=lambda node: node.id,
)
def test_the_compact_plan_expands_to_the_plan(
    load_policies: LoadPolicies, demo_catalog: Catalog, node: NodeInfo
) -> None:
    engine = load_policies(demo_catalog, {"initech": TenantUsage(spent_usd=100)})
    request: JSONValue = PlanInput(node=node).model_dump(mode="json")
    plan = Plan.model_validate(engine.evaluate(PLAN_PATH, request))
    compact = CompactPlan.model_validate(engine.evaluate(COMPACT_PLAN_PATH, request))
    assert compact.expand() == plan
    assert any(route.budget_exhausted for route in plan.routes)
