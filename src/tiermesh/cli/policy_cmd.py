"""``tiermesh policy …``: policy as code — test, check, push, diff, explain.

Every command reads a policy directory (see `tiermesh.controlplane.bundle.reader` for
what is taken) and prints problems as ``file:line: message`` on stderr. Exit status: 0
success, 1 the policy or the store refused, 2 bad arguments.

Compiling to Envoy config goes through
:func:`tiermesh.controlplane.reconciler.wiring.offline_compiler`. Tests (and embedders)
inject another compiler or engine by passing a :class:`PolicyCli` as the click context
object: ``CliRunner().invoke(app, args, obj=PolicyCli(compiler_factory=...))``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import getpass
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from tiermesh.controlplane.api import PLAN_PATH, NodeInfo, Plan, PlanInput
from tiermesh.controlplane.bundle import (
    BundleOutcome,
    BundleReadError,
    CheckReport,
    Compiler,
    Finding,
    LocalBundle,
    check_bundle,
    check_nodes,
    evaluate_bundle,
    evaluate_plan,
    load_engine,
    read_documents,
    read_policy_dir,
)
from tiermesh.controlplane.reconciler import (
    InvalidRegistration,
    node_from_registration,
    offline_compiler,
)
from tiermesh.controlplane.store import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TXN_OPS,
    ROOT,
    Bundle,
    BundleConflict,
    EtcdStore,
    NodeRecord,
    StoreError,
    StoreUnavailable,
)
from tiermesh.rego import (
    EngineUnavailable,
    JSONValue,
    OpaLibraryEngine,
    PolicyEngine,
    PolicyError,
    RegorusEngine,
    RegoTestResult,
)
from tiermesh.xds import Snapshot, typeurls

__all__ = ["PolicyCli", "app"]

app = typer.Typer(no_args_is_help=True, help="Policy as code: test, check, push, diff, explain.")

ENGINES: dict[str, Callable[[], PolicyEngine]] = {"regorus": RegorusEngine, "opa": OpaLibraryEngine}


@dataclass(frozen=True, slots=True)
class PolicyCli:
    """What the commands compile and evaluate with; the click context object.

    ``compiler_factory`` is called once per command that compiles (default: the control
    plane's compiler with a throwaway trust bundle, see ``offline_compiler``).
    """

    compiler_factory: Callable[[], Compiler] = offline_compiler
    engine_factory: Callable[[], PolicyEngine] = RegorusEngine


DirArg = Annotated[
    Path, typer.Argument(help="Policy directory (Rego, data/*.yaml|json, schemas/*.json).")
]
EtcdOpt = Annotated[str, typer.Option("--etcd", help="etcd endpoint(s): HOST:PORT[,HOST:PORT…].")]
RootOpt = Annotated[str, typer.Option("--root", help="Key prefix of this mesh in etcd.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="etcd call deadline, seconds.")]
SkipCompileOpt = Annotated[
    bool,
    typer.Option(
        "--skip-compile",
        help="Check everything but the Envoy config (compile + verify); "
        "the control plane still verifies before it serves.",
    ),
]


def _settings(ctx: typer.Context) -> PolicyCli:
    found = ctx.find_object(PolicyCli)
    return found if found is not None else PolicyCli()


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _print_findings(findings: Sequence[Finding], root: str | None, *, label: str) -> None:
    for finding in findings:
        typer.echo(f"{label}: {finding.render(root)}", err=True)


def _read(directory: Path) -> LocalBundle:
    try:
        return read_policy_dir(directory)
    except BundleReadError as exc:
        _fail(str(exc))


def _compiler(ctx: typer.Context, skip: bool) -> Compiler | None:
    if skip:
        return None
    try:
        return _settings(ctx).compiler_factory()
    except NotImplementedError as exc:
        _fail(f"{exc}: the Envoy config cannot be compiled and verified here (--skip-compile)")


def _check(ctx: typer.Context, bundle: LocalBundle, compiler: Compiler | None) -> CheckReport:
    engine = _settings(ctx).engine_factory()
    try:
        report = check_bundle(bundle.files, engine, compiler=compiler)
    finally:
        engine.close()
    root = str(bundle.root)
    _print_findings([w for w in report.warnings if w.stage.value != "plan"], root, label="warning")
    _print_findings(report.errors, root, label="error")
    return report


# -- test -------------------------------------------------------------------------------


@app.command("test")
def run_tests(
    directory: DirArg,
    engine: Annotated[
        str, typer.Option("--engine", help="regorus, opa, or all (opa skipped if missing).")
    ] = "regorus",
) -> None:
    """Run the Rego tests (test_* rules) of DIR on one or every engine."""
    if engine not in (*ENGINES, "all"):
        raise typer.BadParameter(
            f"expected regorus, opa or all, got {engine!r}", param_hint="--engine"
        )
    bundle = _read(directory)
    documents = read_documents(bundle.files)
    table = Table("engine", "file", "test", "result", title=f"Rego tests in {directory}")
    failed = False
    summaries: list[str] = []
    for name in ENGINES if engine == "all" else (engine,):
        try:
            instance = ENGINES[name]()
        except EngineUnavailable as exc:
            if engine == "all":
                summaries.append(f"{name}: skipped ({exc.reason})")
                continue
            _fail(str(exc))
        try:
            problems = load_engine(instance, documents)
            results: list[RegoTestResult] = [] if problems else instance.run_tests()
        finally:
            instance.close()
        _print_findings(problems, str(directory), label="error")
        failed = failed or bool(problems)
        for result in results:
            verdict = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
            if result.error:
                verdict += f" {result.error}"
            table.add_row(name, result.file, result.name, verdict)
        bad = sum(not r.passed for r in results)
        failed = failed or bad > 0
        summaries.append(f"{name}: {len(results) - bad} passed, {bad} failed")
    console = Console(highlight=False)
    if table.row_count:
        console.print(table)
    for line in summaries:
        console.print(line)
    if failed:
        raise typer.Exit(1)


# -- check ------------------------------------------------------------------------------


@app.command("check")
def check(ctx: typer.Context, directory: DirArg, skip_compile: SkipCompileOpt = False) -> None:
    """Check DIR as a push would, and compile and verify its Envoy config.

    Rego, catalog, schemas, Rego tests, every node's plan (violations, fallback chains),
    then compile and verify per node.
    """
    bundle = _read(directory)
    report = _check(ctx, bundle, _compiler(ctx, skip_compile))
    if not report.ok:
        _fail(f"{len(report.errors)} problem(s) in {directory}")
    passed = sum(result.passed for result in report.tests)
    typer.echo(
        f"ok: {len(bundle.files)} files, {passed} Rego tests, "
        f"plans for {len(report.nodes)} node(s) ({', '.join(report.nodes)}), "
        f"sha256 {report.sha256[:12]}"
    )


# -- push -------------------------------------------------------------------------------


def _store(endpoint: str, root: str, timeout_s: float, max_request_bytes: int) -> EtcdStore:
    try:
        return EtcdStore(
            endpoint,
            root=root,
            timeout_s=timeout_s,
            max_request_bytes=max_request_bytes,
            max_txn_ops=DEFAULT_MAX_TXN_OPS,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--etcd") from exc


async def _push(
    store: EtcdStore, bundle: LocalBundle, expected: int | None, provenance: Mapping[str, object]
) -> tuple[Bundle, bool]:
    try:
        await store.connect()
        current = await store.get_bundle()
        want = current.revision if expected is None else expected
        if current.sha256 == bundle.sha256 and want == current.revision:
            return current, False
        pushed = await store.push_bundle(
            bundle.files,
            expected_revision=want,
            provenance={k: v for k, v in provenance.items() if isinstance(v, str | int | bool)},
        )
        return pushed, True
    finally:
        await store.aclose()


@app.command("push")
def push(
    ctx: typer.Context,
    directory: DirArg,
    etcd: EtcdOpt,
    expect_revision: Annotated[
        int | None,
        typer.Option("--expect-revision", help="Refuse unless etcd holds this bundle revision."),
    ] = None,
    root: RootOpt = ROOT,
    timeout: TimeoutOpt = 5.0,
    max_request_bytes: Annotated[
        int, typer.Option("--max-request-bytes", help="etcd's --max-request-bytes.")
    ] = DEFAULT_MAX_REQUEST_BYTES,
    skip_compile: SkipCompileOpt = False,
) -> None:
    """Check DIR, then replace the bundle in etcd in one compare-and-swap transaction.

    Without --expect-revision the revision read just before the push is expected, so a
    push that lands in between is still refused. On any error nothing stored changes.
    """
    bundle = _read(directory)
    report = _check(ctx, bundle, _compiler(ctx, skip_compile))
    if not report.ok:
        _fail(f"{len(report.errors)} problem(s) in {directory}; nothing was pushed")
    provenance = {
        **bundle.provenance,
        "source": str(directory),
        "pushed_by": getpass.getuser(),
        "pushed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    store = _store(etcd, root, timeout, max_request_bytes)
    try:
        result, changed = asyncio.run(_push(store, bundle, expect_revision, provenance))
    except BundleConflict as exc:
        _fail(
            f"conflict: expected bundle revision {exc.expected_revision} but etcd at {etcd} "
            f"holds revision {exc.actual_revision} (another push landed first); nothing was "
            "pushed — check the new bundle and push again"
        )
    except StoreUnavailable as exc:
        _fail(f"etcd at {exc.endpoint} is unreachable ({exc.detail}); if the error came "
              "during the write it may have been applied: run `tiermesh policy diff`")  # fmt: skip
    except StoreError as exc:
        _fail(f"{exc}; nothing was pushed")
    if not changed:
        typer.echo(f"unchanged: etcd already holds this bundle as revision {result.revision}")
        return
    commit = bundle.provenance.get("git_commit")
    dirty = " (dirty)" if bundle.provenance.get("git_dirty") else ""
    source = f" from commit {str(commit)[:12]}{dirty}" if commit else ""
    typer.echo(
        f"pushed bundle revision {result.revision}{source}: {len(bundle.files)} files, "
        f"sha256 {result.sha256[:12]}, etcd revision {result.etcd_revision}"
    )


# -- diff -------------------------------------------------------------------------------


async def _read_live(store: EtcdStore) -> tuple[Bundle, tuple[NodeRecord, ...]]:
    try:
        await store.connect()
        return await store.get_bundle(), await store.list_nodes()
    finally:
        await store.aclose()


def _evaluate(
    ctx: typer.Context, files: Mapping[str, bytes], nodes: Sequence[NodeInfo], compiler: Compiler
) -> BundleOutcome:
    engine = _settings(ctx).engine_factory()
    try:
        return evaluate_bundle(files, engine, nodes=nodes, compiler=compiler)
    finally:
        engine.close()


def _changes(old: Snapshot | None, new: Snapshot) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for type_url in typeurls.PUSH_ORDER:
        before = {n: r.version for n, r in old.encoded(type_url).items()} if old else {}
        after = {n: r.version for n, r in new.encoded(type_url).items()}
        kind = typeurls.SHORT_NAMES[type_url]
        for name in sorted(before.keys() | after.keys()):
            if name not in before:
                rows.append((kind, name, "added"))
            elif name not in after:
                rows.append((kind, name, "removed"))
            elif before[name] != after[name]:
                rows.append((kind, name, "changed"))
    return rows


@app.command("diff")
def diff(
    ctx: typer.Context,
    directory: DirArg,
    etcd: EtcdOpt,
    root: RootOpt = ROOT,
    timeout: TimeoutOpt = 5.0,
) -> None:
    """Per node, the Envoy resources DIR would add, remove or change against the live bundle.

    Both sides are compiled here, for the registered nodes plus DIR's check nodes, with
    no spend recorded (usage counters are not applied to either side).
    """
    bundle = _read(directory)
    compiler = _compiler(ctx, skip=False)
    assert compiler is not None
    try:
        live, records = asyncio.run(
            _read_live(_store(etcd, root, timeout, DEFAULT_MAX_REQUEST_BYTES))
        )
    except StoreError as exc:
        _fail(str(exc))
    nodes: dict[str, NodeInfo] = {n.id: n for n in check_nodes(read_documents(bundle.files))[0]}
    for record in records:
        try:
            nodes[record.node_id] = node_from_registration(record)
        except InvalidRegistration as exc:
            typer.echo(f"warning: {exc}", err=True)
    ordered = [nodes[name] for name in sorted(nodes)]
    local = _evaluate(ctx, bundle.files, ordered, compiler)
    if not local.ok:
        _print_findings(local.errors, str(directory), label="error")
        _fail(f"{directory} does not compile; nothing to compare")
    old: Mapping[str, Snapshot] = {}
    if live.revision:
        outcome = _evaluate(ctx, live.files, ordered, compiler)
        _print_findings(outcome.errors, f"etcd:r{live.revision}", label="warning")
        old = outcome.snapshots
    table = Table(
        "node", "type", "resource", "change", title=f"{directory} vs live revision {live.revision}"
    )
    total = 0
    for node in ordered:
        for kind, name, change in _changes(old.get(node.id), local.snapshots[node.id]):
            table.add_row(node.id, kind, name, change)
            total += 1
    console = Console(highlight=False)
    if total:
        console.print(table)
    console.print(f"{total} change(s) across {len(ordered)} node(s)")


# -- explain ----------------------------------------------------------------------------


def _read_input(path: Path) -> PlanInput:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PlanInput.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        _fail(f"{path}: cannot read: {exc}")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        _fail(f"{path}: not a plan input: {problems}")


def _chain_text(plan: Plan, route_index: int) -> str:
    route = plan.routes[route_index]
    if not route.chain:
        return "[red](empty: answers 503)[/]"
    steps = []
    for step in route.chain:
        model = f" as {step.model}" if step.model else ""
        hedge = f", hedge {step.hedge.per_try_timeout_ms}ms" if step.hedge else ""
        degraded = ", degraded" if step.degraded else ""
        steps.append(
            f"{step.backend} ({step.tier}{model}, {step.timeout_ms}ms, "
            f"{step.retries.count} retries{hedge}{degraded})"
        )
    return " → ".join(steps)


# A rule head: at column 0, a name then ``:=``/``=``/``contains``/``if``/``{``/``(``/``[``
# (or ``default name``); comments, ``package`` and ``import`` lines are not rules.
_RULE_HEAD = re.compile(
    r"^(?:default\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"\s*(?::=|=|\(|\[|\{|\bcontains\b|\bif\b|$)"
)
_NOT_RULES = frozenset({"package", "import"})


def _rule_heads(source: str) -> list[tuple[int, str]]:
    """``(line, rule name)`` of every rule head in a Rego module, in source order."""
    heads = []
    for number, text in enumerate(source.splitlines(), start=1):
        match = _RULE_HEAD.match(text)
        if match is None or text.startswith("#"):
            continue
        name = match["name"]
        if name in _NOT_RULES or name.split(".")[0] in _NOT_RULES:
            continue
        heads.append((number, name))
    return heads


def _covered_rules(
    modules: Mapping[str, str], covered: Mapping[str, Sequence[int]]
) -> list[tuple[str, int, str]]:
    """``(file, head line, rule)`` of each rule with a covered line between its head and
    the next rule's head, sorted by file and line."""
    found: set[tuple[str, int, str]] = set()
    for file, lines in covered.items():
        heads = _rule_heads(modules.get(file, ""))
        for line in lines:
            owner = None
            for head in heads:
                if head[0] > line:
                    break
                owner = head
            if owner is not None:
                found.add((file, *owner))
    return sorted(found)


def _explain_rules(
    console: Console, modules: Mapping[str, str], data: Mapping[str, JSONValue], node: NodeInfo
) -> None:
    """The "rules that produced it" section: OPA's coverage of the plan evaluation."""
    console.print("rules that produced it (coverage from the OPA engine):")
    try:
        opa = OpaLibraryEngine()
    except EngineUnavailable as exc:
        console.print(f"  not shown: the OPA library is unavailable ({exc.reason})", soft_wrap=True)
        return
    try:
        opa.load(modules, dict(data))
        request: JSONValue = PlanInput(node=node).model_dump(mode="json")
        _, covered = opa.evaluate_covered(PLAN_PATH, request)
    except PolicyError as exc:
        console.print(f"  not shown: OPA could not evaluate the plan ({exc})", soft_wrap=True)
        return
    finally:
        opa.close()
    rules = _covered_rules(modules, covered)
    if not rules:
        console.print("  (no rule lines were covered)")
    for file, line, name in rules:
        console.print(f"  {file}:{line} {name}", soft_wrap=True)


@app.command("explain")
def explain(
    ctx: typer.Context,
    input_file: Annotated[
        Path, typer.Option("--input", help="A PlanInput (JSON or YAML): {version, node}.")
    ],
    directory: Annotated[Path, typer.Argument(help="Policy directory.")] = Path("policies"),
    route: Annotated[
        str, typer.Option("--route", help="Only routes whose name matches this glob.")
    ] = "*",
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show the routing decision DIR makes for the node in --input.

    Every route in match order (fallback chain with timeouts, retries and hedges;
    fail-closed, budget and rate-limit flags), the backends it uses, and the policy's
    violations and warnings, then the rules that produced it: the rules whose lines
    OPA's coverage report marks as evaluated (always from the OPA engine, whichever
    engine made the plan; a note instead when the OPA library is unavailable).
    """
    plan_input = _read_input(input_file)
    bundle = _read(directory)
    documents = read_documents(bundle.files)
    engine = _settings(ctx).engine_factory()
    try:
        problems = list(documents.findings) or load_engine(engine, documents)
        plan, plan_problems = (None, []) if problems else evaluate_plan(engine, plan_input.node)
    finally:
        engine.close()
    problems += plan_problems
    if plan is None:
        _print_findings(problems, str(directory), label="error")
        _fail(f"no plan for node {plan_input.node.id}")
    if as_json:
        typer.echo(plan.model_dump_json(indent=2))
        return
    console = Console(highlight=False)
    node = plan.node
    console.print(
        f"node [bold]{node.id}[/] ({node.tier}, {node.region}) — {len(plan.routes)} routes, "
        f"bundle sha256 {bundle.sha256[:12]}; first matching route wins"
    )
    table = Table("route", "chain", "flags")
    for index, entry in enumerate(plan.routes):
        if not fnmatch.fnmatchcase(entry.name, route):
            continue
        flags = [
            name
            for name, on in (
                ("fail-closed", entry.fail_closed),
                ("budget-exhausted", entry.budget_exhausted),
            )
            if on
        ]
        if entry.rate_limit is not None:
            flags.append(
                f"rate {entry.rate_limit.tokens_per_fill}/{entry.rate_limit.fill_interval_ms}ms"
            )
        table.add_row(entry.name, _chain_text(plan, index), ", ".join(flags))
    console.print(table)
    backends = Table("backend", "tier", "region", "residency", "endpoint", "spiffe id")
    for backend in plan.backends:
        backends.add_row(backend.name, backend.tier, backend.region, backend.residency,
                         f"{backend.endpoint.host}:{backend.endpoint.port}",
                         backend.spiffe_id or "-")  # fmt: skip
    console.print(backends)
    for label, messages in (("violation", plan.violations), ("warning", plan.warnings)):
        for message in messages:
            console.print(f"{label}: {message}", soft_wrap=True)
    console.print(f"{len(plan.violations)} violation(s), {len(plan.warnings)} warning(s)")
    _explain_rules(console, documents.modules, documents.data, plan_input.node)
