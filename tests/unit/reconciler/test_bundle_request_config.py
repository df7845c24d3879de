"""A bundle's ``data/request_config.yaml``: checked like the catalog (each bad setting a
finding with its file, key and line), and kept out of the compile-time engine, so the
bundle's Rego tests do not depend on a mesh's settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.controlplane.bundle import (
    CheckReport,
    Stage,
    check_bundle,
    evaluate_bundle,
    read_documents,
)
from tiermesh.rego import PolicyEngine, RegorusEngine

FILE = "data/request_config.yaml"


@pytest.fixture
def engine() -> Iterator[PolicyEngine]:
    engine = RegorusEngine()
    yield engine
    engine.close()


def check(settings: str, engine: PolicyEngine) -> CheckReport:
    files = {**policy_files(), FILE: settings.encode()}
    return check_bundle(files, engine, compiler=FakeCompiler())


def test_good_settings_pass_and_the_rego_tests_do_not_see_them(engine: PolicyEngine) -> None:
    # Both would fail request_test.rego if its tests saw them.
    report = check("# mesh-wide\ndefault_tenant: acme\nmax_request_tokens: 5\n", engine)
    assert report.ok, report.lines()
    assert report.tests
    assert all(result.passed for result in report.tests)
    assert "request_config" not in read_documents(policy_files()).data


def test_an_empty_document_is_no_setting(engine: PolicyEngine) -> None:
    assert check("# nothing set yet\n", engine).ok


def test_require_api_key_is_a_boolean_setting(engine: PolicyEngine) -> None:
    assert check("require_api_key: true\n", engine).ok


@pytest.mark.parametrize(
    ("settings", "line", "message"),
    [
        ("default_tenant: acme\nmax_request_tokens: '5'\n", 2,
         "max_request_tokens: must be a number, not str '5'"),
        ("max_request_tokens: true\n", 1, "max_request_tokens: must be a number, not bool"),
        ("default_tenant: 7\n", 1, "default_tenant: must be a string, not int 7"),
        ("require_api_key: 'yes'\n", 1, "require_api_key: must be a boolean, not str"),
        ("require_api_key: 1\n", 1, "require_api_key: must be a boolean, not int 1"),
        ("a: 1\nlimits: [1, 2]\n", 2, "limits: must be a string"),
        ("unset: null\n", 1, "unset: must be a string"),
        ("'not a name': 1\n", 1, "not a name: not a setting name"),
        ("- max_request_tokens\n", 1, "must be a mapping of setting names to values"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_a_finding_naming_file_key_and_line(
    engine: PolicyEngine, settings: str, line: int, message: str
) -> None:
    report = check(settings, engine)
    assert not report.ok
    (finding,) = report.errors
    assert (finding.stage, finding.file, finding.line) == (Stage.DATA, FILE, line)
    assert finding.message.startswith(message), finding.message
    assert report.lines() == [f"{FILE}:{line}: {finding.message}"]


def test_the_reconciler_refuses_such_a_bundle(engine: PolicyEngine) -> None:
    files = {**policy_files(), FILE: b"max_request_tokens: lots\n"}
    outcome = evaluate_bundle(files, engine, compiler=FakeCompiler())
    assert not outcome.ok
    assert [f.file for f in outcome.errors] == [FILE]
