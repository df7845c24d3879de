"""Engine error texts become file:line problems."""

from __future__ import annotations

from tiermesh.rego._error_text import opa_problems, regorus_problems
from tiermesh.rego.errors import RegoProblem

REGORUS_PARSE = (
    "\n--> policies/routing/routing.rego:12:5\n  |\n12 |   x := \n  |     ^\n"
    "error: expecting `}` while parsing set\n\nStack backtrace:\n   0: <unknown>\n"
)


def test_opa_single_parse_error() -> None:
    text = (
        "1 error occurred: policies/routing/routing.rego:12: rego_parse_error: "
        "unexpected } token\n\t}\n\t^"
    )
    assert opa_problems(text) == (
        [RegoProblem("unexpected } token", "policies/routing/routing.rego", 12)],
        True,
    )


def test_opa_several_compile_errors() -> None:
    text = (
        "bundle activation failed: 2 errors occurred:\n"
        "p/two.rego:2: rego_unsafe_var_error: var x is unsafe\n"
        "p/two.rego:3: rego_unsafe_var_error: var y is unsafe"
    )
    problems, is_parse = opa_problems(text)
    assert not is_parse
    assert [str(p) for p in problems] == [
        "p/two.rego:2: var x is unsafe",
        "p/two.rego:3: var y is unsafe",
    ]


def test_opa_text_without_location_is_kept_whole() -> None:
    assert opa_problems("engine has been closed") == (
        [RegoProblem("engine has been closed")],
        False,
    )


def test_regorus_error_drops_the_backtrace() -> None:
    [problem] = regorus_problems(REGORUS_PARSE)
    assert problem == RegoProblem(
        "expecting `}` while parsing set", "policies/routing/routing.rego", 12, 5
    )
    assert str(problem) == "policies/routing/routing.rego:12: expecting `}` while parsing set"


def test_regorus_error_without_location() -> None:
    text = "not a valid rule path\n\nStack backtrace:\n   0: <unknown>"
    assert regorus_problems(text) == [RegoProblem("not a valid rule path")]
