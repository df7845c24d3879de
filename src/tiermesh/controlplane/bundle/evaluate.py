"""From bundle files to one verified snapshot per node: the pipeline checks and the
reconciler share.

documents → catalog → engine.load → per node: plan → plan checks and violations →
compile and verify. Every problem becomes a :class:`Finding`; nothing raises for a bad
bundle. Synchronous and CPU-bound: run it on a worker thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import ValidationError

from tiermesh.controlplane.api import PLAN_PATH, NodeInfo, Plan, PlanInput, TenantUsage
from tiermesh.controlplane.bundle.compiler import Compiler, compile_findings
from tiermesh.controlplane.bundle.documents import (
    Documents,
    catalog_line,
    check_nodes,
    read_documents,
)
from tiermesh.controlplane.bundle.findings import Finding, Stage
from tiermesh.controlplane.bundle.plan_checks import plan_problems
from tiermesh.rego import (
    UNDEFINED,
    JSONValue,
    PolicyEngine,
    PolicyError,
    PolicyEvalError,
    RegoParseError,
)
from tiermesh.xds import Snapshot

__all__ = ["BundleOutcome", "evaluate_bundle", "evaluate_plan", "load_engine"]


@dataclass(frozen=True, slots=True)
class BundleOutcome:
    """Everything one evaluation learned. ``ok`` when there is no error at all.

    ``plans`` and ``snapshots`` hold the nodes that got that far (a node with errors may
    still have a plan); publish ``snapshots`` only when ``ok``.
    """

    documents: Documents
    nodes: tuple[NodeInfo, ...]
    plans: Mapping[str, Plan]
    snapshots: Mapping[str, Snapshot]
    errors: tuple[Finding, ...]
    warnings: tuple[Finding, ...] = field(default=())
    engine_loaded: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


def load_engine(engine: PolicyEngine, documents: Documents) -> list[Finding]:
    """Load the bundle's modules and data into ``engine``; Rego problems as findings."""
    try:
        engine.load(documents.modules, dict(documents.data))
    except RegoParseError as exc:
        return [
            Finding(Stage.REGO, problem.message, problem.file, problem.line)
            for problem in exc.problems
        ]
    except PolicyError as exc:
        return [Finding(Stage.REGO, str(exc))]
    return []


def evaluate_plan(engine: PolicyEngine, node: NodeInfo) -> tuple[Plan | None, list[Finding]]:
    """The loaded policy's plan for ``node``, or the findings that prevent it."""
    request: JSONValue = PlanInput(node=node).model_dump(mode="json")
    try:
        result = engine.evaluate(PLAN_PATH, request)
    except PolicyEvalError as exc:
        location = exc.location
        if location is not None and location.file is not None:
            return None, [
                Finding(Stage.PLAN, location.message, location.file, location.line, node.id)
            ]
        return None, [Finding(Stage.PLAN, str(exc), node=node.id)]
    except PolicyError as exc:
        return None, [Finding(Stage.PLAN, str(exc), node=node.id)]
    if result is UNDEFINED:
        return None, [Finding(Stage.PLAN, f"{PLAN_PATH} is undefined", node=node.id)]
    try:
        return Plan.model_validate(result), []
    except ValidationError as exc:
        return None, [
            Finding(
                Stage.PLAN,
                "decision does not fit the plan schema: "
                + ".".join(str(part) for part in error["loc"])
                + f": {error['msg']}",
                node=node.id,
            )
            for error in exc.errors(include_url=False)[:20]
        ]


def evaluate_bundle(
    files: Mapping[str, bytes],
    engine: PolicyEngine,
    *,
    nodes: Sequence[NodeInfo] | None = None,
    compiler: Compiler | None = None,
    usage: Mapping[str, TenantUsage] | None = None,
    refuse_violations: bool = True,
) -> BundleOutcome:
    """Run the pipeline over ``files`` with an empty ``engine`` (it is loaded here).

    ``nodes`` None plans for the check nodes of the bundle
    (:func:`~tiermesh.controlplane.bundle.documents.check_nodes`). ``usage`` replaces the
    bundle's own ``data.usage`` (absent: nobody has spent anything). Plan violations are
    errors unless ``refuse_violations`` is False (then warnings). ``compiler`` None skips
    compiling; a compiler raising ``NotImplementedError`` is reported once and skipped.
    The engine is left loaded for the caller (to run tests); the caller closes it.
    """
    documents = read_documents(files)
    errors: list[Finding] = list(documents.findings)
    warnings: list[Finding] = []
    data = dict(documents.data)
    if usage is not None:
        data["usage"] = {name: entry.model_dump(mode="json") for name, entry in usage.items()}
    else:
        data.setdefault("usage", {})
    documents = Documents(
        documents.modules,
        MappingProxyType(data),
        documents.sources,
        documents.texts,
        documents.catalog,
        documents.findings,
    )
    rego_errors = load_engine(engine, documents) if documents.modules else []
    if not documents.modules:
        errors.append(Finding(Stage.REGO, "the bundle holds no Rego modules"))
    errors += rego_errors
    loaded = bool(documents.modules) and not rego_errors
    if nodes is None:
        found, node_problems = check_nodes(documents)
        errors += node_problems
        nodes = found
    catalog = documents.catalog
    if not loaded or catalog is None:
        return BundleOutcome(documents, tuple(nodes), {}, {}, tuple(errors), (), loaded)
    plans: dict[str, Plan] = {}
    snapshots: dict[str, Snapshot] = {}
    for node in nodes:
        plan, problems = evaluate_plan(engine, node)
        errors += problems
        if plan is None:
            continue
        plans[node.id] = plan
        violations = [
            Finding(
                Stage.VIOLATION,
                message,
                documents.catalog_file,
                catalog_line(documents, message),
                node.id,
            )
            for message in plan.violations
        ]
        (errors if refuse_violations else warnings).extend(violations)
        warnings += [Finding(Stage.PLAN, message, node=node.id) for message in plan.warnings]
        errors += [
            Finding(Stage.PLAN, message, node=node.id) for message in plan_problems(plan, catalog)
        ]
        if compiler is None:
            continue
        try:
            snapshots[node.id] = compiler(plan, catalog)
        except NotImplementedError as exc:
            errors.append(Finding(Stage.COMPILE, f"cannot compile snapshots: {exc}"))
            compiler = None
        except Exception as exc:  # noqa: BLE001 - any compiler failure is a finding
            errors += [
                Finding(Stage.COMPILE, message, node=node.id) for message in compile_findings(exc)
            ]
    return BundleOutcome(
        documents,
        tuple(nodes),
        MappingProxyType(plans),
        MappingProxyType(snapshots),
        tuple(errors),
        tuple(warnings),
        loaded,
    )
