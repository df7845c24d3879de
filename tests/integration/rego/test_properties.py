"""Invariants of every plan, for the demo catalog and seeded random catalogs, on both engines.

- restricted routes fail closed and hold only local backends of the node itself,
  or private backends cleared for restricted data that the tenant allows; never cloud;
- every chain step stays inside the tenant's allowed tiers and residencies, and
  serves the alias's model;
- every empty restricted chain fails closed and is reported as a warning, every other
  empty chain as a violation;
- route names are unique and ``backends`` lists exactly the backends chains use.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.integration.rego.conftest import LoadPolicies
from tiermesh.controlplane.api import PLAN_PATH, Catalog, ChainStep, Plan, RoutePlan, TenantUsage

TIERS = ["local", "private", "cloud"]
RESIDENCIES = ["eu", "us", "onprem"]
NODES = [
    {"id": "edge-1", "tier": "local", "region": "eu-west", "residency": ["eu"]},
    {"id": "gpu-1", "tier": "private", "region": "eu-west", "residency": ["eu"]},
    {"id": "cloud-gw", "tier": "cloud", "region": "us-east", "residency": ["us"]},
]
_TIER_DEFAULTS = {
    "timeout_ms": 1000,
    "first_byte_timeout_ms": 100,
    "retries": {"count": 1, "backoff_base_ms": 10, "backoff_max_ms": 100},
    "circuit_breaker": {
        "max_connections": 4,
        "max_pending": 4,
        "max_requests": 4,
        "max_retries": 1,
    },
    "outlier_detection": {
        "consecutive_5xx": 3,
        "interval_ms": 1000,
        "base_ejection_ms": 1000,
        "max_ejection_percent": 50,
    },
    "health_check": {
        "interval_ms": 1000,
        "timeout_ms": 100,
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
    },
}


def random_catalog(seed: int) -> Catalog:
    """A valid catalog with random tiers, residencies, clearances and tenants."""
    rng = random.Random(seed)
    models = ["m1", "m2", "m3", "m4"]
    backends = []
    for index in range(rng.randint(2, 6)):
        tier = rng.choice(TIERS)
        clearance = rng.choice(
            [None, "public", "internal"] + (["restricted"] if tier != "cloud" else [])
        )
        backends.append(
            {
                "name": f"b{index}",
                "tier": tier,
                "node": rng.choice([None, "edge-1", "gpu-1"]) if tier == "local" else None,
                "region": rng.choice(["eu-west", "us-east"]),
                "residency": rng.choice(RESIDENCIES),
                "cost_per_1k_tokens": {"input": rng.choice([0, 0.001, 0.01]), "output": 0},
                "capacity": rng.randint(1, 8),
                "models": rng.sample(models, rng.randint(1, 3)),
                "max_complexity": rng.randint(1, 5),
                "max_sensitivity": clearance,
                # Loopback: a local or private backend elsewhere would need a spiffe_id.
                "endpoint": {"host": f"127.0.1.{index + 1}", "port": 8000},
            }
        )
    tenants = []
    for index in range(rng.randint(1, 4)):
        allowed = rng.sample(TIERS, rng.randint(1, 3))
        restricted = [t for t in ("local", "private") if t in allowed and rng.random() < 0.6]
        tenants.append(
            {
                "name": f"t{index}",
                "residency": rng.sample(RESIDENCIES, rng.randint(1, 3)),
                "monthly_budget_usd": rng.choice([0, 5, 100]),
                "allowed_tiers": allowed,
                "restricted_tiers": restricted,
            }
        )
    served = sorted({m for b in backends for m in b["models"]})
    return Catalog.model_validate(
        {
            "defaults": {"tiers": dict.fromkeys(TIERS, _TIER_DEFAULTS), "default_task": "chat"},
            "backends": backends,
            "tenants": tenants,
            "aliases": [{"name": "a", "models": rng.sample(served, min(2, len(served)))}],
            "tasks": [
                {"name": "classify", "complexity": 1},
                {"name": "chat", "complexity": 2},
                {"name": "reasoning", "complexity": 4},
                {"name": "cascade", "complexity": 4, "strategy": "cascade"},
            ],
        }
    )


def _check_step(catalog: Catalog, node: dict[str, Any], route: RoutePlan, step: ChainStep) -> None:
    backend = next(b for b in catalog.backends if b.name == step.backend)
    tenant = next(t for t in catalog.tenants if t.name == route.match.tenant)
    assert step.tier == backend.tier
    assert backend.tier in tenant.allowed_tiers, route.name
    assert backend.residency in tenant.residency, route.name
    if backend.tier == "local":
        assert backend.node in (None, node["id"]), route.name
    if route.match.model != "*":
        alias = next(a for a in catalog.aliases if a.name == route.match.model)
        assert step.model in alias.models
        assert step.model in backend.models
    if route.match.sensitivity == "restricted":
        assert backend.tier != "cloud", f"{route.name}: cloud backend {backend.name}"
        assert backend.tier in tenant.restricted_tiers, route.name
        if backend.tier == "private":
            assert backend.max_sensitivity == "restricted", route.name


def check_plan(catalog: Catalog, node: dict[str, Any], plan: Plan) -> None:
    names = [route.name for route in plan.routes]
    assert len(names) == len(set(names))
    used: set[str] = set()
    for route in plan.routes:
        assert route.fail_closed is (route.match.sensitivity == "restricted")
        for step in (*route.chain, *route.budget_fallback):
            _check_step(catalog, node, route, step)
            used.add(step.backend)
        if route.chain:
            assert route.chain[-1].hedge is None
            assert all(step.hedge is not None for step in route.chain[:-1])
        elif route.fail_closed:
            m = route.match
            assert (
                f"tenant {m.tenant}: restricted data with model {m.model} on node {node['id']} "
                "has no cleared backend; it fails closed (503)"
            ) in plan.warnings, route.name
        else:
            m = route.match
            assert any(
                v.startswith(
                    f"tenant {m.tenant}: no backend for {m.sensitivity} data with model {m.model} "
                )
                for v in plan.violations
            ), route.name
    assert not any(
        v.startswith(f"tenant {t.name}: no backend for restricted")
        for t in catalog.tenants
        for v in plan.violations
    )
    assert [b.name for b in plan.backends] == sorted(used)


def _evaluate(
    load: LoadPolicies, catalog: Catalog, node: dict[str, Any], usage: dict[str, TenantUsage]
) -> Plan:
    return Plan.model_validate(load(catalog, usage).evaluate(PLAN_PATH, {"node": node}))


@pytest.mark.parametrize("spent", [0.0, 1_000_000.0], ids=["within-budget", "budget-spent"])
def test_demo_catalog_invariants(
    load_policies: LoadPolicies, demo_catalog: Catalog, spent: float
) -> None:
    usage = {t.name: TenantUsage(spent_usd=spent) for t in demo_catalog.tenants}
    for node in NODES:
        plan = _evaluate(load_policies, demo_catalog, node, usage)
        check_plan(demo_catalog, node, plan)
        assert all(route.budget_exhausted is (spent > 0) for route in plan.routes)


@pytest.mark.parametrize("seed", range(6))
def test_random_catalog_invariants(load_policies: LoadPolicies, seed: int) -> None:
    catalog = random_catalog(seed)
    usage = {catalog.tenants[0].name: TenantUsage(spent_usd=10)}
    for node in NODES:
        check_plan(catalog, node, _evaluate(load_policies, catalog, node, usage))
