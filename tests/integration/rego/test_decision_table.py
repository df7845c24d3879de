"""Decision table for the demo catalog: node + usage -> key routes, on both engines.

Each case names routes and the backends (with the model they are asked for) of
their chain; the whole plan must also validate as a ``Plan`` and be identical
on regorus and on OPA.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.rego.conftest import LoadPolicies, new_engine, policy_modules
from tiermesh.controlplane.api import PLAN_PATH, Catalog, Plan, TenantUsage, policy_data
from tiermesh.rego import UNDEFINED, JSONValue

EDGE = {"id": "edge-1", "tier": "local", "region": "eu-west", "residency": ["eu"]}
GPU = {"id": "gpu-1", "tier": "private", "region": "eu-west", "residency": ["eu"]}
CLOUD_US = {"id": "cloud-gw", "tier": "cloud", "region": "us-east", "residency": ["us"]}

Chain = list[tuple[str, str | None]]

CASES: list[tuple[str, dict[str, Any], dict[str, float], dict[str, Chain]]] = [
    (
        "edge: simple tasks stay local-first, hard ones start big and hedge down",
        EDGE,
        {},
        {
            "acme.public.classify.*": [
                ("edge-smollm", None),
                ("onprem-gpu", None),
                ("frontier-eu", None),
            ],
            "acme.public.reasoning.*": [
                ("frontier-eu", None),
                ("onprem-gpu", None),
                ("edge-smollm", None),
            ],
            "acme.public.reasoning.smart": [
                ("frontier-eu", "frontier-large"),
                ("onprem-gpu", "qwen2.5-14b-instruct"),
            ],
            "acme.internal.*.fast": [
                ("onprem-gpu", "smollm2-135m-instruct"),
                ("frontier-eu", "frontier-mini"),
                ("edge-smollm", "smollm2-135m-instruct"),
            ],
            "globex.public.classify.*": [
                ("edge-smollm", None),
                ("onprem-gpu", None),
                ("frontier-eu", None),
                ("frontier-us", None),
            ],
            "initech.internal.chat.*": [("frontier-eu", None), ("edge-smollm", None)],
        },
    ),
    (
        "edge: restricted data stays on the box, or the cleared on-prem GPU for acme",
        EDGE,
        {},
        {
            "acme.restricted.classify.*": [("edge-smollm", None), ("onprem-gpu", None)],
            "acme.restricted.reasoning.*": [("onprem-gpu", None), ("edge-smollm", None)],
            "globex.restricted.chat.*": [("edge-smollm", None)],
            "globex.restricted.reasoning.smart": [],
        },
    ),
    (
        "edge: a spent budget goes local first and is not refused",
        EDGE,
        {"initech": 7.5},
        {
            "initech.public.chat.*": [("edge-smollm", None)],
            "initech.public.reasoning.smart": [
                ("frontier-us", "frontier-large"),
                ("frontier-eu", "frontier-large"),
            ],
            "acme.public.chat.*": [
                ("onprem-gpu", None),
                ("frontier-eu", None),
                ("edge-smollm", None),
            ],
        },
    ),
    (
        "private node: no edge box, restricted only where cleared",
        GPU,
        {},
        {
            "acme.restricted.classify.*": [("onprem-gpu", None)],
            "globex.restricted.chat.*": [],
            "globex.public.classify.*": [
                ("onprem-gpu", None),
                ("frontier-eu", None),
                ("frontier-us", None),
            ],
        },
    ),
    (
        "US cloud gateway: same-region backends first, residency still holds",
        CLOUD_US,
        {},
        {
            "globex.public.reasoning.*": [
                ("frontier-us", None),
                ("frontier-eu", None),
                ("onprem-gpu", None),
            ],
            "acme.public.reasoning.*": [("frontier-eu", None), ("onprem-gpu", None)],
            "initech.public.chat.*": [("frontier-us", None), ("frontier-eu", None)],
        },
    ),
]

# Restricted routes with no cleared backend on the node fail closed (503): warnings,
# not violations. The demo catalog itself has no violation on any node.
FAILS_CLOSED: dict[str, list[tuple[str, str]]] = {
    "edge-1": [("globex", "smart"), ("initech", "smart")],
    "gpu-1": [(t, m) for t in ("globex", "initech") for m in ("*", "fast", "smart")],
    "cloud-gw": [(t, m) for t in ("globex", "initech") for m in ("*", "fast", "smart")],
}


def fails_closed(tenant: str, model: str, node: str) -> str:
    return (
        f"tenant {tenant}: restricted data with model {model} on node {node} "
        "has no cleared backend; it fails closed (503)"
    )


def _plan(
    engine_load: LoadPolicies, catalog: Catalog, node: dict[str, Any], spent: dict[str, float]
) -> Plan:
    usage = {name: TenantUsage(spent_usd=amount) for name, amount in spent.items()}
    value = engine_load(catalog, usage).evaluate(PLAN_PATH, {"version": "v1", "node": node})
    return Plan.model_validate(value)


@pytest.mark.parametrize(
    ("node", "spent", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decision(
    load_policies: LoadPolicies,
    demo_catalog: Catalog,
    node: dict[str, Any],
    spent: dict[str, float],
    expected: dict[str, Chain],
) -> None:
    plan = _plan(load_policies, demo_catalog, node, spent)
    routes = {route.name: route for route in plan.routes}
    got = {name: [(s.backend, s.model) for s in routes[name].chain] for name in expected}
    assert got == expected
    assert len(plan.routes) == 3 * 3 * (len(demo_catalog.tasks) + 1) * (
        len(demo_catalog.aliases) + 1
    )
    for name in expected:
        assert routes[name].fail_closed is (routes[name].match.sensitivity == "restricted")
        assert routes[name].budget_exhausted is (name.split(".")[0] in spent)
    assert plan.violations == ()
    expected_warnings = [fails_closed(t, m, node["id"]) for t, m in FAILS_CLOSED[node["id"]]]
    assert [w for w in plan.warnings if "fails closed" in w] == expected_warnings
    for tenant, model in FAILS_CLOSED[node["id"]]:
        assert all(
            route.chain == ()
            for route in plan.routes
            if (route.match.tenant, route.match.sensitivity, route.match.model)
            == (tenant, "restricted", model)
        )


@pytest.mark.parametrize("node", [EDGE, GPU, CLOUD_US], ids=["edge", "private", "cloud"])
def test_regorus_and_opa_decide_identically(demo_catalog: Catalog, node: dict[str, Any]) -> None:
    usage = {"initech": {"spent_usd": 5.0}}
    data = policy_data(demo_catalog, {k: TenantUsage(**v) for k, v in usage.items()})
    plans: list[JSONValue] = []
    for kind in ("regorus", "opa"):
        engine = new_engine(kind)
        try:
            engine.load(policy_modules(), data)
            plans.append(engine.evaluate(PLAN_PATH, {"node": node}))
        finally:
            engine.close()
    assert plans[0] == plans[1]
    Plan.model_validate(plans[0])


def test_no_node_no_plan(load_policies: LoadPolicies, demo_catalog: Catalog) -> None:
    assert load_policies(demo_catalog, None).evaluate(PLAN_PATH, {"version": "v1"}) is UNDEFINED
