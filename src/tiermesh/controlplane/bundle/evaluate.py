"""From bundle files to one verified snapshot per node: the pipeline checks and the
reconciler share.

documents → catalog → engine.load → per node: plan → plan checks and violations →
compile and verify. Every problem becomes a :class:`Finding`; nothing raises for a bad
bundle. Synchronous and CPU-bound: run it on a worker thread, never on the event loop.

The policy is evaluated once per node class (tier, region, residency; a node the data
names is a class of its own) and the class's plan shared by its members, after
checking on the class's first member that sharing gives the very plan evaluating would
(:mod:`~tiermesh.controlplane.bundle.plan_classes`; a class failing that check is
evaluated node by node). Plans whose ``routes`` and ``backends`` (nearly all of a plan)
are equal are validated and checked once per pass and then shared, so such nodes hand
the compiler equal, even identical, tuples (see :class:`_PlanShapes`). The policy is
asked for its compact plan (:data:`~tiermesh.controlplane.api.COMPACT_PLAN_PATH`, expanded
here) and, when it has none, for its plan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from pydantic import ValidationError

from tiermesh.controlplane.api import (
    COMPACT_PLAN_PATH,
    PLAN_PATH,
    Catalog,
    CompactPlan,
    NodeInfo,
    Plan,
    PlanInput,
    RoutePlan,
    TenantUsage,
)
from tiermesh.controlplane.bundle.compiler import Compiler, PlanAwareCompiler, compile_findings
from tiermesh.controlplane.bundle.documents import (
    Documents,
    catalog_line,
    check_nodes,
    read_documents,
)
from tiermesh.controlplane.bundle.findings import Finding, Stage
from tiermesh.controlplane.bundle.plan_checks import plan_problems
from tiermesh.controlplane.bundle.plan_classes import (
    PlanClasses,
    ProbeMemo,
    instantiate,
    modules_digest,
    named_strings,
)
from tiermesh.rego import (
    UNDEFINED,
    JSONValue,
    PolicyEngine,
    PolicyError,
    PolicyEvalError,
    RegoParseError,
)
from tiermesh.xds import Snapshot

__all__ = [
    "BundleOutcome",
    "NodePlanner",
    "PlannedNode",
    "evaluate_bundle",
    "evaluate_plan",
    "load_engine",
    "with_usage",
]


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
    planner: NodePlanner | None = None
    """The pass's planner, bound to its engine (usable while the caller keeps the engine
    open and on the engine's thread): plans further nodes exactly as this pass did."""

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


def _validation_is_fieldwise() -> bool:
    """True when a plan's ``routes`` and ``backends`` validate independently of its other
    fields: no validator on :class:`Plan` itself (nested models only see their subtree),
    and the one of :class:`CompactPlan` reads only its body (:data:`_BODY_FIELDS`)."""
    decorators = Plan.__pydantic_decorators__
    return not (
        decorators.validators
        or decorators.field_validators
        or decorators.root_validators
        or decorators.model_validators
    ) and set(CompactPlan.__pydantic_decorators__.model_validators) == {"_references_resolve"}


_SHAPES_ENABLED: Final = _validation_is_fieldwise()
_SHARED_FIELDS: Final = ("routes", "backends")
_BODY_FIELDS: Final = {
    False: ("routes", "backends"),
    True: ("steps", "route_sets", "tenants", "backends"),
}
"""The body of a decision (False: a plan, True: a compact plan): all of it but the
node, violations, warnings and version."""


@dataclass(slots=True)
class _Shape:
    body_json: tuple[JSONValue, ...]
    plan: Plan
    problems: tuple[str, ...] | None = None


def _validate(result: JSONValue, compact: bool) -> Plan:
    """The plan of a decision: validated as it is, or as a compact plan and expanded."""
    if compact:
        return CompactPlan.model_validate(result).expand()
    return Plan.model_validate(result)


class _PlanShapes:
    """The plan bodies validated so far in one pass.

    A decision whose body (:data:`_BODY_FIELDS`: a plan's ``routes`` and ``backends``, a
    compact plan's ``steps``, ``route_sets``, ``tenants`` and ``backends``) equals (as
    JSON) one already validated is validated without it: its other fields (``node``,
    ``violations``, ``warnings``, ``version``) go through :meth:`Plan.model_validate`
    with empty routes and backends, and the plan then takes the tuples validated before.
    Sound because validating :class:`Plan` is field by field and the only validator of
    :class:`CompactPlan` reads its body alone (both checked at import, else this memo is
    off), and a body's subtree holds only strings, string literals, numbers, booleans,
    nulls, lists and objects, whose lax validation maps ``==``-equal inputs (``1 == 1.0
    == True`` included) to equal values and the same success; the errors of a failing
    decision come from a full validation, as without the memo. :func:`plan_problems`
    reads only routes, backends and the catalog, so its result is kept per body too (one
    catalog per pass).

    At most :data:`LIMIT` bodies are kept (later ones are validated every time). Not
    thread-safe: one instance per pass, on the pass's thread.
    """

    LIMIT: Final = 64

    def __init__(self) -> None:
        self._buckets: dict[tuple[bool, int, str], list[_Shape]] = {}
        self._count = 0

    @staticmethod
    def _fingerprint(result: dict[str, JSONValue], compact: bool) -> tuple[bool, int, str] | None:
        listed, backends = result.get("tenants" if compact else "routes"), result.get("backends")
        if not isinstance(listed, list) or not isinstance(backends, list):
            return None
        try:
            return compact, len(listed), json.dumps(backends, sort_keys=True)
        except (TypeError, ValueError):
            return None

    def validate(self, result: JSONValue, *, compact: bool = False) -> tuple[Plan, _Shape | None]:
        """The plan of ``result`` (a compact plan's expanded), equal in value and errors to
        validating it; and its body."""
        if not _SHAPES_ENABLED or not isinstance(result, dict):
            return _validate(result, compact), None
        key = self._fingerprint(result, compact)
        if key is None:
            return _validate(result, compact), None
        fields = _BODY_FIELDS[compact]
        body = tuple(result.get(name) for name in fields)
        bucket = self._buckets.setdefault(key, [])
        for shape in bucket:
            if shape.body_json == body:
                head_json = {name: value for name, value in result.items() if name not in fields}
                try:
                    head = Plan.model_validate({**head_json, "routes": [], "backends": []})
                except ValidationError:
                    return _validate(result, compact), shape  # raises the full errors
                shared = {name: getattr(shape.plan, name) for name in _SHARED_FIELDS}
                return head.model_copy(update=shared), shape
        plan = _validate(result, compact)
        if self._count >= self.LIMIT:
            return plan, None
        self._count += 1
        shape = _Shape(body, plan)
        bucket.append(shape)
        return plan, shape

    @staticmethod
    def problems(plan: Plan, shape: _Shape | None, catalog: Catalog) -> list[str]:
        """``plan_problems(plan, catalog)``, computed once per body."""
        if shape is None:
            return plan_problems(plan, catalog)
        if shape.problems is None:
            shape.problems = tuple(plan_problems(plan, catalog))
        return list(shape.problems)


def evaluate_plan(engine: PolicyEngine, node: NodeInfo) -> tuple[Plan | None, list[Finding]]:
    """The loaded policy's plan for ``node``, or the findings that prevent it."""
    plan, _shape, findings = _evaluate_plan(engine, node, _PlanShapes())
    return plan, findings


def _evaluate_plan(
    engine: PolicyEngine, node: NodeInfo, shapes: _PlanShapes
) -> tuple[Plan | None, _Shape | None, list[Finding]]:
    request: JSONValue = PlanInput(node=node).model_dump(mode="json")
    compact = True
    try:
        result = engine.evaluate(COMPACT_PLAN_PATH, request)
        if result is UNDEFINED:
            compact = False
            result = engine.evaluate(PLAN_PATH, request)
    except PolicyEvalError as exc:
        location = exc.location
        if location is not None and location.file is not None:
            return (
                None,
                None,
                [Finding(Stage.PLAN, location.message, location.file, location.line, node.id)],
            )
        return None, None, [Finding(Stage.PLAN, str(exc), node=node.id)]
    except PolicyError as exc:
        return None, None, [Finding(Stage.PLAN, str(exc), node=node.id)]
    if result is UNDEFINED:
        return None, None, [Finding(Stage.PLAN, f"{PLAN_PATH} is undefined", node=node.id)]
    try:
        plan, shape = shapes.validate(result, compact=compact)
    except ValidationError as exc:
        return (
            None,
            None,
            [
                Finding(
                    Stage.PLAN,
                    f"decision does not fit the {'compact ' if compact else ''}plan schema: "
                    + ".".join(str(part) for part in error["loc"])
                    + f": {error['msg']}",
                    node=node.id,
                )
                for error in exc.errors(include_url=False)[:20]
            ],
        )
    return plan, shape, []


@dataclass(frozen=True, slots=True)
class PlannedNode:
    """One node's plan (None when it could not be made) and what planning it found."""

    plan: Plan | None
    errors: tuple[Finding, ...]
    warnings: tuple[Finding, ...]


class NodePlanner:
    """Plans nodes against one loaded engine, documents and catalog (one pass).

    A node's plan comes from its class's plan when the class shares one
    (:mod:`~tiermesh.controlplane.bundle.plan_classes`), else from evaluating the policy
    for it; either way it is the plan evaluating the policy for that node gives (checked
    on each class's first member). Plan bodies are validated and checked once per pass
    (:class:`_PlanShapes`). Findings: plan errors, violations (errors unless
    ``refuse_violations`` is False, then warnings), the plan's warnings and plan check
    problems, each naming the node.

    Not thread-safe: use on the engine's thread only.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        documents: Documents,
        catalog: Catalog,
        *,
        refuse_violations: bool = True,
        probe_memo: ProbeMemo | None = None,
    ) -> None:
        self._engine = engine
        self._documents = documents
        self._catalog = catalog
        self._refuse = refuse_violations
        self._shapes = _PlanShapes()
        # id(routes) → (routes, shape): the shape of a class plan's body (the tuple is
        # held, so its id cannot be reused while the entry lives).
        self._body_shapes: dict[int, tuple[tuple[RoutePlan, ...], _Shape | None]] = {}
        self._lines: dict[str, int | None] = {}
        self.classes = PlanClasses(
            named_strings(documents.data), modules_digest(documents.modules), probe_memo
        )

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def documents(self) -> Documents:
        return self._documents

    @property
    def engine(self) -> PolicyEngine:
        """The loaded engine this planner evaluates with (the caller owns and closes it)."""
        return self._engine

    def _evaluate(self, node: NodeInfo) -> tuple[Plan | None, _Shape | None, list[Finding]]:
        self.classes.evaluations += 1
        plan, shape, problems = _evaluate_plan(self._engine, node, self._shapes)
        if plan is not None:
            self._body_shapes.setdefault(id(plan.routes), (plan.routes, shape))
        return plan, shape, problems

    def _known_shape(self, plan: Plan) -> _Shape | None:
        known = self._body_shapes.get(id(plan.routes))
        return known[1] if known is not None and known[0] is plan.routes else None

    def _plan(self, node: NodeInfo) -> tuple[Plan | None, _Shape | None, list[Finding]]:
        """``node``'s plan, its body's shape, and the findings that prevent it."""
        classes = self.classes
        template = classes.template_for(node)
        if template is None and classes.needs_probe(node) and classes.checked_before(node):
            stand_in, _shape, failed = self._evaluate(classes.stand_in(node))
            classes.adopt(node, None if failed else stand_in)
            template = classes.template_for(node)
        if template is not None:
            derived = instantiate(template, node)
            return derived, self._known_shape(derived), []
        real, shape, problems = self._evaluate(node)
        if classes.needs_probe(node):
            stand_in = None
            if real is not None and not problems:
                stand_in, _shape, failed = self._evaluate(classes.stand_in(node))
                stand_in = None if failed else stand_in
            classes.decide(node, real, stand_in)
        return real, shape, problems

    def _catalog_line(self, message: str) -> int | None:
        """:func:`catalog_line` of ``message``, once per message and pass (a class's
        members share their messages)."""
        try:
            return self._lines[message]
        except KeyError:
            line = self._lines[message] = catalog_line(self._documents, message)
            return line

    def plan(self, node: NodeInfo) -> PlannedNode:
        """``node``'s plan and findings (see the class doc)."""
        plan, shape, problems = self._plan(node)
        if plan is None:
            return PlannedNode(None, tuple(problems), ())
        node_id = node.id
        catalog_file = self._documents.catalog_file
        violations = [
            Finding(Stage.VIOLATION, message, catalog_file, self._catalog_line(message), node_id)
            for message in plan.violations
        ]
        errors = list(problems)
        warnings: list[Finding] = []
        (errors if self._refuse else warnings).extend(violations)
        warnings += [Finding(Stage.PLAN, message, None, None, node_id) for message in plan.warnings]
        errors += [
            Finding(Stage.PLAN, message, None, None, node_id)
            for message in self._shapes.problems(plan, shape, self._catalog)
        ]
        return PlannedNode(plan, tuple(errors), tuple(warnings))


def with_usage(documents: Documents, usage: Mapping[str, TenantUsage] | None) -> Documents:
    """``documents`` with ``data.usage`` replaced by ``usage`` (None: the bundle's own,
    or nobody has spent anything when it has none)."""
    data = dict(documents.data)
    if usage is not None:
        data["usage"] = {name: entry.model_dump(mode="json") for name, entry in usage.items()}
    else:
        data.setdefault("usage", {})
    return Documents(
        documents.modules,
        MappingProxyType(data),
        documents.sources,
        documents.texts,
        documents.catalog,
        documents.findings,
    )


def evaluate_bundle(
    files: Mapping[str, bytes],
    engine: PolicyEngine,
    *,
    nodes: Sequence[NodeInfo] | None = None,
    compiler: Compiler | None = None,
    usage: Mapping[str, TenantUsage] | None = None,
    refuse_violations: bool = True,
    probe_memo: ProbeMemo | None = None,
) -> BundleOutcome:
    """Run the pipeline over ``files`` with an empty ``engine`` (it is loaded here).

    ``nodes`` None plans for the check nodes of the bundle
    (:func:`~tiermesh.controlplane.bundle.documents.check_nodes`). ``usage`` replaces the
    bundle's own ``data.usage`` (absent: nobody has spent anything). Plan violations are
    errors unless ``refuse_violations`` is False (then warnings). ``compiler`` None skips
    compiling; a compiler raising ``NotImplementedError`` is reported once and skipped.
    Every node is planned before any is compiled, and a
    :class:`~tiermesh.controlplane.bundle.compiler.PlanAwareCompiler` is first bound to
    all of those plans (``with_plans``). ``probe_memo`` carries the node classes'
    first-member checks from earlier passes (module
    :mod:`~tiermesh.controlplane.bundle.plan_classes`; None: every class is checked in
    this pass). The engine is left loaded for the caller (to run tests); the caller
    closes it.
    """
    documents = with_usage(read_documents(files), usage)
    errors: list[Finding] = list(documents.findings)
    warnings: list[Finding] = []
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
    planner = NodePlanner(
        engine, documents, catalog, refuse_violations=refuse_violations, probe_memo=probe_memo
    )
    # Every plan first: a node's snapshot may depend on the others' (PlanAwareCompiler).
    for node in nodes:
        planned = planner.plan(node)
        errors += planned.errors
        warnings += planned.warnings
        if planned.plan is not None:
            plans[node.id] = planned.plan
    if isinstance(compiler, PlanAwareCompiler):
        compiler = compiler.with_plans(MappingProxyType(plans))
    for node_id, plan in plans.items():
        if compiler is None:
            break
        try:
            snapshots[node_id] = compiler(plan, catalog)
        except NotImplementedError as exc:
            errors.append(Finding(Stage.COMPILE, f"cannot compile snapshots: {exc}"))
            compiler = None
        except Exception as exc:  # noqa: BLE001 - any compiler failure is a finding
            errors += [
                Finding(Stage.COMPILE, message, node=node_id) for message in compile_findings(exc)
            ]
    return BundleOutcome(
        documents,
        tuple(nodes),
        MappingProxyType(plans),
        MappingProxyType(snapshots),
        tuple(errors),
        tuple(warnings),
        loaded,
        planner,
    )
