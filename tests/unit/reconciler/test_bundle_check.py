"""check_bundle: each kind of bad bundle is an error located by file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import SMALL_CATALOG, policy_files, write_policy_dir
from tiermesh.controlplane.api import Catalog, Plan, parse_catalog
from tiermesh.controlplane.bundle import (
    CheckReport,
    Finding,
    Stage,
    check_bundle,
    evaluate_bundle,
    plan_problems,
)
from tiermesh.rego import PolicyEngine, RegorusEngine
from tiermesh.xds import Snapshot


@pytest.fixture
def engine() -> Iterator[PolicyEngine]:
    engine = RegorusEngine()
    yield engine
    engine.close()


def check(files: dict[str, bytes], engine: PolicyEngine) -> CheckReport:
    return check_bundle(files, engine, compiler=FakeCompiler())


def stages(report: CheckReport) -> set[Stage]:
    return {finding.stage for finding in report.errors}


def test_a_good_bundle_passes(engine: PolicyEngine) -> None:
    report = check(policy_files(), engine)
    assert report.ok, report.lines()
    assert report.nodes == ("edge-1", "gpu-1")
    assert len(report.tests) > 10
    assert all(result.passed for result in report.tests)
    assert set(report.plans) == {"edge-1", "gpu-1"}


def test_a_directory_renders_paths_under_it(tmp_path: Path, engine: PolicyEngine) -> None:
    files = policy_files()
    files["routing/routing.rego"] = files["routing/routing.rego"].replace(
        b"plan := {", b"plan := {{", 1
    )
    write_policy_dir(tmp_path, files)
    report = check_bundle(tmp_path, engine, compiler=FakeCompiler())
    assert not report.ok
    assert report.lines()[0].startswith(f"{tmp_path}/routing/routing.rego:")


def test_rego_syntax_error_has_file_and_line(engine: PolicyEngine) -> None:
    files = policy_files()
    files["budget/budget.rego"] += b"\n\nbroken if {\n"
    report = check(files, engine)
    assert stages(report) == {Stage.REGO}
    first = report.errors[0]
    assert first.file == "budget/budget.rego"
    lines = files["budget/budget.rego"].count(b"\n")
    assert first.line is not None
    assert first.line >= lines - 2
    assert report.lines()[0].startswith(f"budget/budget.rego:{first.line}: ")


def test_catalog_schema_violation_names_field_and_line(engine: PolicyEngine) -> None:
    catalog = SMALL_CATALOG.replace("tier: cloud\n", "tier: moon\n")
    report = check(policy_files(catalog), engine)
    assert Stage.CATALOG in stages(report)
    finding = next(f for f in report.errors if f.stage is Stage.CATALOG)
    assert finding.file == "data/catalog.yaml"
    assert "backends[1].tier" in finding.message
    expected_line = catalog.splitlines().index("    tier: moon") + 1
    assert finding.line == expected_line


def test_unknown_model_in_an_alias(engine: PolicyEngine) -> None:
    catalog = SMALL_CATALOG + "aliases:\n  - name: fast\n    models: [small-model, ghost]\n"
    report = check(policy_files(catalog), engine)
    finding = next(f for f in report.errors if f.stage is Stage.CATALOG)
    assert "aliases[0].models[1]" in finding.message
    assert "no backend serves model 'ghost'" in finding.message
    assert finding.line == len(catalog.splitlines())


def test_missing_catalog_and_bad_yaml(engine: PolicyEngine) -> None:
    files = policy_files()
    del files["data/catalog.yaml"]
    assert "missing" in check(files, engine).lines()[0]
    files["data/catalog.yaml"] = b"version: v1\nbackends: [\n"
    report = check(files, engine)
    assert report.errors[0].stage is Stage.DATA
    assert report.errors[0].line == 3


# The tenant may use only the local tier and no node has a local backend: nothing can
# serve its public or internal data, a broken catalog.
LOCAL_ONLY_CATALOG = SMALL_CATALOG.replace(
    "allowed_tiers: [private, cloud]\n    restricted_tiers: [private]",
    "allowed_tiers: [local]\n    restricted_tiers: [local]",
)


def test_an_empty_public_chain_is_a_violation_on_its_tenant_line(engine: PolicyEngine) -> None:
    assert LOCAL_ONLY_CATALOG != SMALL_CATALOG
    report = check(policy_files(LOCAL_ONLY_CATALOG), engine)
    assert stages(report) == {Stage.VIOLATION}
    finding = report.errors[0]
    assert finding.node == "edge-1"
    assert "tenant acme: no backend for internal data" in finding.message
    assert finding.line == LOCAL_ONLY_CATALOG.splitlines().index("  - name: acme") + 1
    assert any("no backend for public data" in f.message for f in report.errors)
    assert not any("restricted" in f.message for f in report.errors)


def test_an_empty_restricted_chain_fails_closed_with_a_warning(engine: PolicyEngine) -> None:
    # The only backend cleared for restricted data leaves: restricted routes answer 503.
    catalog = SMALL_CATALOG.replace("max_sensitivity: restricted", "max_sensitivity: internal")
    outcome = evaluate_bundle(policy_files(catalog), engine, compiler=FakeCompiler())
    assert outcome.ok, outcome.errors
    assert set(outcome.snapshots) == {"edge-1", "gpu-1"}
    assert (
        "tenant acme: restricted data with model * on node edge-1 has no cleared backend; "
        "it fails closed (503)"
    ) in [f.message for f in outcome.warnings if f.node == "edge-1"]
    restricted = [r for r in outcome.plans["edge-1"].routes if r.fail_closed]
    assert restricted
    assert all(r.chain == () for r in restricted)


def test_violations_can_be_warnings(engine: PolicyEngine) -> None:
    catalog = LOCAL_ONLY_CATALOG
    outcome = evaluate_bundle(
        policy_files(catalog), engine, compiler=FakeCompiler(), refuse_violations=False
    )
    assert outcome.ok
    assert any(f.stage is Stage.VIOLATION for f in outcome.warnings)


def test_compiler_findings_and_an_unwired_compiler(engine: PolicyEngine) -> None:
    report = check_bundle(policy_files(), engine, compiler=FakeCompiler({"onprem"}))
    assert stages(report) == {Stage.COMPILE}
    assert any("cluster tm-onprem" in line for line in report.lines())

    def unwired(plan: Plan, catalog: Catalog) -> Snapshot:
        raise NotImplementedError("compiler not wired")

    other = RegorusEngine()
    try:
        report = check_bundle(policy_files(), other, compiler=unwired)
    finally:
        other.close()
    assert [f.message for f in report.errors] == ["cannot compile snapshots: compiler not wired"]


def test_no_compiler_is_a_warning(engine: PolicyEngine) -> None:
    report = check_bundle(policy_files(), engine)
    assert report.ok
    assert any(f.stage is Stage.COMPILE for f in report.warnings)


def test_schemas_must_be_json(engine: PolicyEngine) -> None:
    files = policy_files()
    files["schemas/plan.schema.json"] = b'{\n  "a": 1,\n}\n'
    report = check(files, engine)
    assert [(f.stage, f.file, f.line) for f in report.errors] == [
        (Stage.SCHEMA, "schemas/plan.schema.json", 3)
    ]


def test_failing_rego_test_is_an_error(engine: PolicyEngine) -> None:
    files = policy_files()
    files["extra/extra_test.rego"] = b"package extra_test\n\ntest_fails if {\n\t1 == 2\n}\n"
    report = check(files, engine)
    assert [f.render() for f in report.errors] == [
        "extra/extra_test.rego: test extra_test.test_fails failed"
    ]


def test_bad_nodes_document(engine: PolicyEngine) -> None:
    report = check(policy_files(nodes="- {id: x, tier: moon, region: r}\n"), engine)
    finding = report.errors[0]
    assert (finding.stage, finding.file, finding.line) == (Stage.DATA, "data/nodes.yaml", 1)
    assert "[0].tier" in finding.message


def test_nodes_default_to_hosting_nodes(engine: PolicyEngine) -> None:
    catalog = SMALL_CATALOG.replace("    tier: private\n", "    tier: private\n    node: gpu-9\n")
    report = check(policy_files(catalog, nodes=None), engine)
    assert report.nodes == ("gpu-9",)
    report = check(policy_files(nodes=None), RegorusEngine())
    assert report.nodes == ("check-cloud-eu-west", "check-private-eu-west")


def test_plan_problems_on_a_broken_chain(engine: PolicyEngine) -> None:
    catalog = parse_catalog(SMALL_CATALOG)
    plan = check(policy_files(), engine).plans["edge-1"]
    restricted = next(r for r in plan.routes if r.fail_closed)
    cloud_step = next(s for r in plan.routes for s in r.chain if s.tier == "cloud")
    bad = restricted.model_copy(
        update={"chain": (*restricted.chain, restricted.chain[0], cloud_step)}
    )
    broken = plan.model_copy(update={"routes": (bad, bad)})
    problems = plan_problems(broken, catalog)
    assert f"route {bad.name} appears 2 times" in problems
    assert f"route {bad.name}: chain holds backend onprem 2 times" in problems
    assert f"route {bad.name}: fail-closed chain reaches cloud backend cloud-eu" in problems


def test_finding_render() -> None:
    finding = Finding(Stage.REGO, "boom", "a/b.rego", 3, "n1")
    assert finding.render() == "a/b.rego:3: node n1: boom"
    assert finding.render("policies/") == "policies/a/b.rego:3: node n1: boom"
    assert str(Finding(Stage.PLAN, "x")) == "x"


def test_plan_problems_of_a_shared_chain_name_every_route(engine: PolicyEngine) -> None:
    """Routes sharing one chain tuple (as an expanded compact plan has them): a broken
    chain is reported for each route, a sound one checked once and for none."""
    catalog = parse_catalog(SMALL_CATALOG)
    plan = check(policy_files(), engine).plans["edge-1"]
    first = plan.routes[0]
    doubled = (*first.chain, first.chain[0])
    routes = tuple(
        route.model_copy(update={"chain": doubled if index % 2 else first.chain})
        for index, route in enumerate(plan.routes)
    )
    problems = plan_problems(plan.model_copy(update={"routes": routes}), catalog)
    backend = first.chain[0].backend
    assert [problem for problem in problems if "holds backend" in problem] == [
        f"route {route.name}: chain holds backend {backend} 2 times"
        for index, route in enumerate(routes)
        if index % 2
    ]


def test_plan_problems_of_chains_equal_but_for_settings(engine: PolicyEngine) -> None:
    """Chains of other step groups (other objects, other settings, the same backends and
    tiers) are as sound as the first; one with a step's tier changed is not, though
    its backends are the same, and is reported for every route that has it."""
    catalog = parse_catalog(SMALL_CATALOG)
    plan = check(policy_files(), engine).plans["edge-1"]
    first = next(route for route in plan.routes if len(route.chain) > 1)
    step = first.chain[0]
    mistiered = step.model_copy(update={"tier": "cloud" if step.tier != "cloud" else "local"})
    chains = [
        tuple(s.model_copy(update={"timeout_ms": s.timeout_ms + n}) for s in first.chain)
        for n in range(1, 4)
    ] + [(mistiered, *first.chain[1:])]
    routes = tuple(
        route.model_copy(update={"chain": chains[index % 4]})
        for index, route in enumerate(plan.routes)
    )
    problems = plan_problems(plan.model_copy(update={"routes": routes}), catalog)
    assert [problem for problem in problems if "the plan says" in problem] == [
        f"route {route.name}: chain step 1: backend {step.backend} is {step.tier}, "
        f"the plan says {mistiered.tier}"
        for index, route in enumerate(routes)
        if index % 4 == 3
    ]
