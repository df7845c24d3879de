"""``check_bundle``: everything a bundle must pass before it may be pushed."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tiermesh.controlplane.api import NodeInfo, Plan, render_schemas
from tiermesh.controlplane.bundle.compiler import Compiler
from tiermesh.controlplane.bundle.errors import BundleReadError
from tiermesh.controlplane.bundle.evaluate import evaluate_bundle
from tiermesh.controlplane.bundle.findings import Finding, Stage
from tiermesh.controlplane.bundle.reader import BundleLimits, read_policy_dir
from tiermesh.controlplane.bundle.request_properties import request_property_findings
from tiermesh.controlplane.store import bundle_digest
from tiermesh.rego import PolicyEngine, PolicyError, RegoTestResult

__all__ = ["CheckReport", "check_bundle"]


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The outcome of :func:`check_bundle`. ``ok`` when ``errors`` is empty.

    ``root`` is the directory checked (None for in-memory files); render findings with
    ``finding.render(report.root)`` to get paths an editor can open.
    """

    root: str | None
    sha256: str
    errors: tuple[Finding, ...]
    warnings: tuple[Finding, ...]
    nodes: tuple[str, ...] = ()
    plans: Mapping[str, Plan] = field(default_factory=dict)
    tests: tuple[RegoTestResult, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        """Every error, one ``file:line: message`` line each."""
        return [finding.render(self.root) for finding in self.errors]


def _schema_findings(files: Mapping[str, bytes]) -> tuple[list[Finding], list[Finding]]:
    errors: list[Finding] = []
    warnings: list[Finding] = []
    current = render_schemas()
    for path in sorted(p for p in files if p.startswith("schemas/")):
        try:
            json.loads(files[path])
        except UnicodeDecodeError as exc:
            errors.append(Finding(Stage.SCHEMA, f"not UTF-8 text: {exc.reason}", path))
            continue
        except json.JSONDecodeError as exc:
            errors.append(Finding(Stage.SCHEMA, f"invalid JSON: {exc.msg}", path, exc.lineno))
            continue
        name = PurePosixPath(path).name
        if name in current and files[path].decode() != current[name]:
            warnings.append(
                Finding(Stage.SCHEMA, "differs from the schema the contracts generate", path)
            )
    return errors, warnings


def _test_findings(engine: PolicyEngine) -> tuple[list[Finding], tuple[RegoTestResult, ...]]:
    try:
        results = tuple(engine.run_tests())
    except PolicyError as exc:
        return [Finding(Stage.TEST, f"running the Rego tests failed: {exc}")], ()
    failed = [
        Finding(
            Stage.TEST,
            f"test {result.package}.{result.name} failed"
            + (f": {result.error}" if result.error else ""),
            result.file,
        )
        for result in results
        if not result.passed
    ]
    return failed, results


def check_bundle(
    source: str | Path | Mapping[str, bytes],
    engine: PolicyEngine,
    *,
    compiler: Compiler | None = None,
    nodes: Sequence[NodeInfo] | None = None,
    run_tests: bool = True,
    limits: BundleLimits | None = None,
) -> CheckReport:
    """Check a policy directory (or bundle files) the way a push and the reconciler would.

    In order, every problem reported with its file and line where one is involved:
    reading (limits, encoding); data documents (YAML/JSON syntax) and the catalog
    (``CatalogError`` problems); ``schemas/*.json`` are JSON (and a warning when they
    differ from the contracts'); every Rego module parses and compiles; the Rego tests
    pass (``run_tests``); the request policy holds tiermesh's properties on generated
    inputs (:mod:`.request_properties`: findings ⇒ restricted, labels never lowered,
    headers agree with the decision); the plan of each node (``nodes``, default: the bundle's check
    nodes — see :func:`~tiermesh.controlplane.bundle.documents.check_nodes`) is defined,
    fits the schema, has no violations and sound fallback chains; ``compiler`` compiles
    and verifies each plan (None: not compiled, with a warning).

    ``engine`` must be empty; it is loaded here and left for the caller to close. Never
    raises for a bad bundle; blocking and CPU-bound (run it off the event loop).
    """
    root: str | None = None
    if isinstance(source, str | Path):
        root = str(source)
        try:
            files: Mapping[str, bytes] = read_policy_dir(
                source, limits=limits, provenance=False
            ).files
        except BundleReadError as exc:
            return CheckReport(root, "", (Finding(Stage.READ, str(exc)),), ())
    else:
        files = dict(source)
    outcome = evaluate_bundle(files, engine, nodes=nodes, compiler=compiler)
    errors = list(outcome.errors)
    warnings = list(outcome.warnings)
    schema_errors, schema_warnings = _schema_findings(files)
    errors += schema_errors
    warnings += schema_warnings
    tests: tuple[RegoTestResult, ...] = ()
    if run_tests and outcome.engine_loaded:
        failed, tests = _test_findings(engine)
        errors += failed
    if outcome.engine_loaded:
        errors += request_property_findings(engine, files, outcome.documents.catalog)
    if compiler is None:
        warnings.append(Finding(Stage.COMPILE, "snapshots were not compiled (no compiler)"))
    if not outcome.nodes and outcome.documents.catalog is not None:
        warnings.append(Finding(Stage.PLAN, "no nodes to plan for"))
    return CheckReport(
        root=root,
        sha256=bundle_digest(files),
        errors=tuple(errors),
        warnings=tuple(warnings),
        nodes=tuple(node.id for node in outcome.nodes),
        plans=outcome.plans,
        tests=tests,
    )
