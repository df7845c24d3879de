"""The shipped policy's compact plan, on every embedded engine, expands to the plan the
same engine answers (regorus, and the OPA Go engine as the oracle)."""

from __future__ import annotations

import pytest

from tests.integration.rego.conftest import LoadPolicies
from tiermesh.controlplane import api
from tiermesh.controlplane.api import Catalog, NodeInfo
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
    # A clone of each tenant with its own first-byte timeout: its route set, its own
    # step group.
    own = [
        tenant.model_copy(
            update={
                "name": f"{tenant.name}-own",
                "resilience": api.RouteResilience(first_byte_timeout_ms=1500 + index),
            }
        )
        for index, tenant in enumerate(demo_catalog.tenants)
    ]
    catalog = demo_catalog.model_copy(update={"tenants": (*demo_catalog.tenants, *own)})
    engine = load_policies(catalog, {"initech": api.TenantUsage(spent_usd=100)})
    request: JSONValue = api.PlanInput(node=node).model_dump(mode="json")
    plan = api.Plan.model_validate(engine.evaluate(api.PLAN_PATH, request))
    compact = api.CompactPlan.model_validate(engine.evaluate(api.COMPACT_PLAN_PATH, request))
    assert compact.expand() == plan
    assert any(route.budget_exhausted for route in plan.routes)
    assert len(compact.steps) == len({tenant.resilience for tenant in catalog.tenants})
    assert len(compact.route_sets) < len(compact.tenants)
