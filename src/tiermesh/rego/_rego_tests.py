"""A Rego unit-test runner that works on any engine that can evaluate a path.

Tests are discovered from module source: top-level rules whose name starts with
``test_`` (written at column 0, as ``opa fmt`` lays them out), in the package
the module declares. A rule written in several bodies is one test. Rules inside
raw strings that happen to start a line with ``test_`` would be picked up too;
``opa fmt``-formatted policies do not have them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from tiermesh.rego.engine import UNDEFINED, JSONValue, RegoTestResult, Undefined
from tiermesh.rego.errors import PolicyEvalError

__all__ = ["discover_tests", "run_rego_tests"]

_PACKAGE = re.compile(r"^package\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.M)
_TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]*)\b", re.MULTILINE)


def discover_tests(modules: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(file, package, rule)`` for every test rule, by module name then source order."""
    found: list[tuple[str, str, str]] = []
    for file in sorted(modules):
        source = modules[file]
        package = _PACKAGE.search(source)
        if package is None:
            continue
        seen: set[str] = set()
        for match in _TEST_RULE.finditer(source):
            name = match[1]
            if name not in seen:
                seen.add(name)
                found.append((file, package[1], name))
    return found


def run_rego_tests(
    modules: Mapping[str, str], evaluate: Callable[[str], JSONValue | Undefined]
) -> list[RegoTestResult]:
    """Evaluate each discovered test rule with ``evaluate`` (no input).

    A test passes when its value is defined and not ``false``. Evaluation
    errors are reported per test, never raised.
    """
    results: list[RegoTestResult] = []
    for file, package, name in discover_tests(modules):
        try:
            value = evaluate(f"data.{package}.{name}")
        except PolicyEvalError as exc:
            results.append(RegoTestResult(file, package, name, passed=False, error=str(exc)))
            continue
        passed = value is not UNDEFINED and value is not False
        results.append(RegoTestResult(file, package, name, passed=passed))
    return results
