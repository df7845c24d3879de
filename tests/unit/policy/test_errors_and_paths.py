"""Error formatting, path checking and test discovery: pure functions."""

from __future__ import annotations

import sys

import pytest

from tiermesh.rego import (
    UNDEFINED,
    EngineUnavailable,
    OpaLibraryEngine,
    PolicyEvalError,
    RegoParseError,
    RegoProblem,
    RegorusEngine,
)
from tiermesh.rego._rego_tests import discover_tests, run_rego_tests
from tiermesh.rego.engine import check_path


def test_parse_error_lists_every_problem_and_exposes_the_first() -> None:
    error = RegoParseError(
        [RegoProblem("bad", "a.rego", 3, 1), RegoProblem("worse", "b.rego", 9)], engine="x"
    )
    assert (error.file, error.line) == ("a.rego", 3)
    assert str(error) == "a.rego:3: bad\nb.rego:9: worse"


def test_parse_error_without_problems_still_says_something() -> None:
    assert str(RegoParseError([], engine="x"))


def test_unavailable_names_the_url() -> None:
    error = EngineUnavailable("opa-rest", "connection refused", url="http://127.0.0.1:1")
    assert "http://127.0.0.1:1" in str(error)


@pytest.mark.parametrize("path", ["data.a", "data.a.b_2", "data._x.y"])
def test_valid_paths(path: str) -> None:
    assert check_path(path, engine="x") == tuple(path.split(".")[1:])


@pytest.mark.parametrize("path", ["data", "a.b", "data.a-b", 'data["a"]', "data.a.", "data.1"])
def test_invalid_paths(path: str) -> None:
    with pytest.raises(PolicyEvalError):
        check_path(path, engine="x")


def test_discovery_orders_by_module_then_source_and_merges_bodies() -> None:
    modules = {
        "z.rego": "package z\n\ntest_b if true\n\ntest_a if true\n\ntest_b if false\n",
        "a.rego": (
            "package a.b\n\n  test_indented if true\n\nnot_a_test if true\n\ntest_x if true\n"
        ),
        "nopkg.rego": "test_orphan if true\n",
    }
    assert discover_tests(modules) == [
        ("a.rego", "a.b", "test_x"),
        ("z.rego", "z", "test_b"),
        ("z.rego", "z", "test_a"),
    ]


def test_runner_reports_values_and_errors() -> None:
    modules = {"t.rego": "package t\n\ntest_true\ntest_false\ntest_undef\ntest_err\ntest_num\n"}
    outcomes = {
        "data.t.test_true": True,
        "data.t.test_false": False,
        "data.t.test_undef": UNDEFINED,
        "data.t.test_num": 3,
    }

    def evaluate(path: str) -> object:
        if path == "data.t.test_err":
            raise PolicyEvalError(path, "boom", engine="fake")
        return outcomes[path]

    results = {r.name: r for r in run_rego_tests(modules, evaluate)}  # type: ignore[arg-type]
    assert {n: r.passed for n, r in results.items()} == {
        "test_true": True,
        "test_false": False,
        "test_undef": False,
        "test_err": False,
        "test_num": True,
    }
    assert results["test_err"].error is not None
    assert "boom" in results["test_err"].error


@pytest.mark.parametrize(
    ("module", "engine", "capability"),
    [("opa_bindings", OpaLibraryEngine, "opa_bindings"), ("regorus", RegorusEngine, "regorus")],
)
def test_missing_library_is_engine_unavailable(
    monkeypatch: pytest.MonkeyPatch, module: str, engine: type, capability: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(EngineUnavailable, match=capability):
        engine()
