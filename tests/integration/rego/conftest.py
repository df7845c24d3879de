"""Fixtures for the routing policies: the modules under policies/ and one engine per kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tiermesh.controlplane.api import Catalog, TenantUsage, load_catalog, policy_data
from tiermesh.rego import (
    EngineUnavailable,
    JSONValue,
    OpaLibraryEngine,
    PolicyEngine,
    RegorusEngine,
)

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies"
DEMO_CATALOG = POLICY_DIR / "data" / "catalog.yaml"
ENGINE_KINDS = ["regorus", "opa"]

LoadPolicies = Callable[[Catalog, Mapping[str, TenantUsage] | None], PolicyEngine]


def policy_modules() -> dict[str, str]:
    """Every .rego file under policies/, named by its path from the repo root."""
    return {
        f"policies/{path.relative_to(POLICY_DIR)}": path.read_text(encoding="utf-8")
        for path in sorted(POLICY_DIR.rglob("*.rego"))
    }


def new_engine(kind: str) -> PolicyEngine:
    """An empty engine of ``kind``; skips the test when the OPA library is missing."""
    if kind == "regorus":
        return RegorusEngine()
    try:
        return OpaLibraryEngine()
    except EngineUnavailable as exc:
        pytest.skip(f"needs the OPA Go engine (opa_bindings): {exc.reason}")


@pytest.fixture(scope="session")
def demo_catalog() -> Catalog:
    return load_catalog(DEMO_CATALOG)


@pytest.fixture(params=ENGINE_KINDS)
def engine_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def load_policies(engine_kind: str) -> Iterator[LoadPolicies]:
    """Load the policies with a catalog and usage into a fresh engine of each kind."""
    engines: list[PolicyEngine] = []

    def load(catalog: Catalog, usage: Mapping[str, TenantUsage] | None = None) -> PolicyEngine:
        engine = new_engine(engine_kind)
        engines.append(engine)
        data: dict[str, JSONValue] = policy_data(catalog, usage)
        engine.load(policy_modules(), data)
        return engine

    yield load
    for engine in engines:
        engine.close()
