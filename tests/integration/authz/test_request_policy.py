"""The request policy's Rego tests pass on regorus and on the real OPA engine, and both
engines give the same decision for the same input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tiermesh.agents.authz import REQUEST_DECISION_PATH
from tiermesh.rego import EngineUnavailable, OpaLibraryEngine, PolicyEngine, RegorusEngine

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies" / "request"
MIN_TESTS = 16


@pytest.fixture(params=["regorus", "opa"])
def engine(request: pytest.FixtureRequest) -> Iterator[PolicyEngine]:
    try:
        engine: PolicyEngine = RegorusEngine() if request.param == "regorus" else OpaLibraryEngine()
    except EngineUnavailable as exc:
        pytest.skip(f"engine unavailable: {exc}")
    modules = {
        f"policies/request/{p.name}": p.read_text(encoding="utf-8")
        for p in sorted(POLICY_DIR.glob("*.rego"))
    }
    engine.load(modules)
    yield engine
    engine.close()


def test_every_rego_test_passes(engine: PolicyEngine) -> None:
    results = engine.run_tests()
    assert [f"{r.name}: {r.error}" for r in results if not r.passed] == []
    assert len(results) >= MIN_TESTS
    assert {r.package for r in results} == {"tiermesh.request_test"}


def test_the_policy_file_has_metadata_and_a_test_file() -> None:
    source = (POLICY_DIR / "request.rego").read_text(encoding="utf-8")
    assert source.startswith("# METADATA\n")
    assert (POLICY_DIR / "request_test.rego").is_file()


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"tenant": "acme", "headers": {"sensitivity": "public"}, "findings": []},
        {"tenant": "acme", "findings": [{"kind": "email", "count": 1, "spans": [[0, 5]]}]},
        {"tenant": 7, "headers": {"sensitivity": ["x"]}, "payload": "odd", "budget": None},
    ],
)
def test_odd_inputs_still_decide(engine: PolicyEngine, document: dict[str, object]) -> None:
    decision = engine.evaluate(REQUEST_DECISION_PATH, document)
    assert isinstance(decision, dict)
    assert set(decision) == {"allow", "sensitivity", "budget_exhausted", "reason", "headers"}
