"""``policy test``, ``check`` and ``explain``: no store involved."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from tests.integration.policy_cli.conftest import invoke
from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import SMALL_CATALOG
from tiermesh.cli.main import app


def test_policy_test_passes_and_fails(policy_dir: Path) -> None:
    result = invoke("policy", "test", str(policy_dir))
    assert result.exit_code == 0, result.output
    assert "regorus: 49 passed, 0 failed" in result.output
    (policy_dir / "extra_test.rego").write_text("package extra_test\n\ntest_no if {\n\t1 == 2\n}\n")
    result = invoke("policy", "test", str(policy_dir), "--engine", "all")
    assert result.exit_code == 1
    assert "regorus: 49 passed, 1 failed" in result.output
    assert "opa: 49 passed, 1 failed" in result.output or "opa: skipped" in result.output


def test_policy_test_reports_syntax_errors(policy_dir: Path) -> None:
    (policy_dir / "bad.rego").write_text("package bad\n\nx if {\n")
    result = invoke("policy", "test", str(policy_dir))
    assert result.exit_code == 1
    assert f"error: {policy_dir}/bad.rego:" in result.output


def test_policy_test_rejects_unknown_engine(policy_dir: Path) -> None:
    assert invoke("policy", "test", str(policy_dir), "--engine", "x").exit_code == 2


def test_check_ok(policy_dir: Path) -> None:
    result = invoke("policy", "check", str(policy_dir))
    assert result.exit_code == 0, result.output
    assert "ok: " in result.output
    assert "edge-1, gpu-1" in result.output


def test_check_rego_syntax_error(policy_dir: Path) -> None:
    path = policy_dir / "routing" / "routing.rego"
    path.write_text(path.read_text() + "\nbroken := {\n")
    result = invoke("policy", "check", str(policy_dir))
    assert result.exit_code == 1
    assert f"error: {path}:" in result.output


def test_check_catalog_problems(policy_dir: Path) -> None:
    catalog = policy_dir / "data" / "catalog.yaml"
    catalog.write_text(SMALL_CATALOG + "aliases:\n  - name: fast\n    models: [ghost]\n")
    result = invoke("policy", "check", str(policy_dir))
    assert result.exit_code == 1
    line = len(catalog.read_text().splitlines())
    assert f"{catalog}:{line}: aliases[0].models[0]: no backend serves model 'ghost'" in (
        result.output
    )


def test_check_empty_chain_violation(policy_dir: Path) -> None:
    catalog = policy_dir / "data" / "catalog.yaml"
    local_only = SMALL_CATALOG.replace(
        "allowed_tiers: [private, cloud]\n    restricted_tiers: [private]",
        "allowed_tiers: [local]\n    restricted_tiers: [local]",
    )
    assert local_only != SMALL_CATALOG
    catalog.write_text(local_only)
    result = invoke("policy", "check", str(policy_dir))
    assert result.exit_code == 1
    assert "node edge-1: tenant acme: no backend for public data" in result.output


def test_check_passes_an_empty_restricted_chain(policy_dir: Path) -> None:
    # Restricted data with no cleared backend fails closed (503): intended, not a violation.
    catalog = policy_dir / "data" / "catalog.yaml"
    catalog.write_text(SMALL_CATALOG.replace("max_sensitivity: restricted", ""))
    result = invoke("policy", "check", str(policy_dir))
    assert result.exit_code == 0, result.output


def test_check_verifier_findings(policy_dir: Path) -> None:
    result = invoke("policy", "check", str(policy_dir), compiler=FakeCompiler({"cloud-eu"}))
    assert result.exit_code == 1
    assert "route acme.public.chat.*: cluster tm-cloud-eu is refused" in result.output


def test_check_compiles_and_verifies_with_the_real_compiler(policy_dir: Path) -> None:
    result = CliRunner().invoke(app, ["policy", "check", str(policy_dir)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["policy", "check", str(policy_dir), "--skip-compile"])
    assert result.exit_code == 0, result.output


def test_missing_directory(tmp_path: Path) -> None:
    result = invoke("policy", "check", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "not a directory" in result.output


def test_explain(policy_dir: Path, tmp_path: Path) -> None:
    request = tmp_path / "input.json"
    node = {"id": "edge-1", "tier": "local", "region": "eu-west", "residency": ["eu"]}
    request.write_text(json.dumps({"version": "v1", "node": node}))
    result = invoke("policy", "explain", "--input", str(request), str(policy_dir))
    assert result.exit_code == 0, result.output
    assert "node edge-1" in result.output
    assert "acme.restricted.chat.*" in result.output
    assert "fail-closed" in result.output
    assert "0 violation(s)" in result.output
    rules = result.output.split("rules that produced it", 1)[1]
    assert "OPA" in rules
    assert "OPA library is unavailable" in rules or re.search(r"routing\.rego:\d+ plan\b", rules)
    result = invoke(
        "policy", "explain", "--input", str(request), str(policy_dir), "--json", "--route", "x"
    )
    plan = json.loads(result.output)
    assert plan["node"]["id"] == "edge-1"


def test_explain_bad_input(policy_dir: Path, tmp_path: Path) -> None:
    request = tmp_path / "input.yaml"
    request.write_text("version: v1\nnode: {id: e, tier: moon, region: r}\n")
    result = invoke("policy", "explain", "--input", str(request), str(policy_dir))
    assert result.exit_code == 1
    assert "node.tier" in result.output
