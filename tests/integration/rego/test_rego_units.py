"""The Rego unit tests beside each policy pass on every embedded engine."""

from __future__ import annotations

from tests.integration.rego.conftest import LoadPolicies, policy_modules
from tiermesh.controlplane.api import Catalog

MIN_REGO_TESTS = 28
PACKAGES = {
    "tiermesh.routing_test",
    "tiermesh.resilience_test",
    "tiermesh.budget_test",
    "tiermesh.residency_test",
    "tiermesh.request_test",
}


def test_every_rego_test_passes(load_policies: LoadPolicies, demo_catalog: Catalog) -> None:
    engine = load_policies(demo_catalog, None)
    results = engine.run_tests()
    failed = [f"{r.path}: {r.error or 'false'}" for r in results if not r.passed]
    assert failed == []
    assert len(results) >= MIN_REGO_TESTS
    assert {r.package for r in results} == PACKAGES


def test_every_policy_has_its_test_file_and_metadata() -> None:
    modules = policy_modules()
    policies = [name for name in modules if not name.endswith("_test.rego")]
    assert len(policies) == 5
    for name in policies:
        assert name.removesuffix(".rego") + "_test.rego" in modules
        assert modules[name].startswith("# METADATA\n"), name
    for name, source in modules.items():
        assert max(len(line) for line in source.splitlines()) <= 1024, name
