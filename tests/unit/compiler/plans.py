"""Plans for compiler tests: evaluated by the real routing policy (regorus) or built by hand."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tiermesh.controlplane.api import (
    COMPACT_PLAN_PATH,
    PLAN_PATH,
    Catalog,
    CompactPlan,
    Plan,
    TenantUsage,
    load_catalog,
    policy_data,
)
from tiermesh.controlplane.model import AuthzSettings
from tiermesh.rego import RegorusEngine

REPO = Path(__file__).resolve().parents[3]
POLICY_DIR = REPO / "policies"
DEMO_CATALOG = POLICY_DIR / "data" / "catalog.yaml"
EDGE_NODE: dict[str, Any] = {
    "id": "edge-1",
    "tier": "local",
    "region": "eu-west",
    "residency": ["eu"],
}
TEST_BUNDLE = (
    "-----BEGIN CERTIFICATE-----\nTEST-ONLY-NOT-A-CERTIFICATE\n-----END CERTIFICATE-----\n"
)
TEST_AUTHZ = AuthzSettings(port=10002)
"""The ext_authz server of nodes in compile-only tests (nothing listens there): a node
without one compiles to an app listener that answers every request 503."""


def policy_modules() -> dict[str, str]:
    """Every .rego file under policies/, named by its path from the repo root."""
    return {
        f"policies/{path.relative_to(POLICY_DIR)}": path.read_text(encoding="utf-8")
        for path in sorted(POLICY_DIR.rglob("*.rego"))
    }


def evaluate_plan(
    catalog: Catalog,
    node: Mapping[str, Any] = EDGE_NODE,
    usage: Mapping[str, TenantUsage] | None = None,
) -> Plan:
    """The plan the routing policy makes for ``node`` from ``catalog`` and ``usage``."""
    engine = RegorusEngine()
    try:
        engine.load(policy_modules(), policy_data(catalog, usage))
        return Plan.model_validate(engine.evaluate(PLAN_PATH, {"node": dict(node)}))
    finally:
        engine.close()


def evaluate_compact_plan(catalog: Catalog, node: Mapping[str, Any] = EDGE_NODE) -> Plan:
    """The routing policy's compact plan for ``node`` from ``catalog``, expanded (routes
    with equal chains share one tuple of steps)."""
    engine = RegorusEngine()
    try:
        engine.load(policy_modules(), policy_data(catalog, None))
        decision = engine.evaluate(COMPACT_PLAN_PATH, {"node": dict(node)})
        return CompactPlan.model_validate(decision).expand()
    finally:
        engine.close()


def demo_catalog() -> Catalog:
    return load_catalog(DEMO_CATALOG)
