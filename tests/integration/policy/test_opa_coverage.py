"""``OpaLibraryEngine.evaluate_covered``: the value plus OPA's covered lines per file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tiermesh.rego import UNDEFINED, EngineUnavailable, OpaLibraryEngine

MODULE = """package cov

default tier := "none"

tier := "local" if {
\tinput.kind == "local"
}

tier := "cloud" if {
\tinput.kind == "cloud"
}

missing if {
\tfalse
}
"""
LOCAL_BODY = {5, 6}
CLOUD_BODY = {9, 10}


@pytest.fixture
def opa() -> Iterator[OpaLibraryEngine]:
    try:
        engine = OpaLibraryEngine()
    except EngineUnavailable as exc:
        pytest.skip(f"needs the OPA Go engine (opa_bindings): {exc.reason}")
    engine.load({"policies/cov.rego": MODULE})
    yield engine
    engine.close()


def test_covered_lines_follow_the_body_that_applied(opa: OpaLibraryEngine) -> None:
    value, covered = opa.evaluate_covered("data.cov.tier", {"kind": "cloud"})
    assert value == "cloud"
    lines = set(covered["policies/cov.rego"])
    assert lines >= CLOUD_BODY
    assert not LOCAL_BODY & lines
    assert covered["policies/cov.rego"] == sorted(lines)

    value, covered = opa.evaluate_covered("data.cov.tier", {"kind": "local"})
    assert value == "local"
    lines = set(covered["policies/cov.rego"])
    assert lines >= LOCAL_BODY
    assert not CLOUD_BODY & lines


def test_undefined_still_reports_coverage(opa: OpaLibraryEngine) -> None:
    value, covered = opa.evaluate_covered("data.cov.missing")
    assert value is UNDEFINED
    assert set(covered) == {"policies/cov.rego"}
    assert 13 not in covered["policies/cov.rego"]  # the head: its body never succeeded


def test_plain_evaluate_unchanged(opa: OpaLibraryEngine) -> None:
    assert opa.evaluate("data.cov.tier", {"kind": "other"}) == "none"
