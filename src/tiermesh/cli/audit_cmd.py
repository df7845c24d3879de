"""``tiermesh audit …``: read, verify and replay the decision audit trail.

Sources: ``--db PATH`` is the control plane's audit database (default ``$TIERMESH_AUDIT_DB``,
else the running ``tiermesh up``'s (its state file, :mod:`tiermesh.cli.up_state`), else
``./audit.sqlite3``); ``--db`` given more than once (one database per control-plane
replica) reads them as one, each decision id once
(:func:`~tiermesh.controlplane.audit.merge_stores`; what was merged is said on stderr);
``--spool DIR`` is a node's decision-log spool (read-only: nothing is repaired or
shipped). Exit codes: 0 success, 1 a verification failed or changes were
found where ``--fail-on-change`` asks, 2 bad usage or an unreadable source.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer
from rich.console import Console
from rich.table import Table

from tiermesh.agents.decisionlog import (
    SignatureInvalid,
    SpoolCorruptedError,
    load_signers,
    read_spool,
    verify,
)
from tiermesh.cli.up_state import NotRunning, read_running
from tiermesh.controlplane.api import DecisionRecord
from tiermesh.controlplane.api.decision import DecisionKind
from tiermesh.controlplane.audit import (
    AuditError,
    AuditQuery,
    AuditStore,
    ChainProblem,
    ReplayReport,
    merge_stores,
    recorded_plan,
    replay,
    signer_keys,
    verify_chain,
    verify_store,
)
from tiermesh.controlplane.bundle import BundleReadError, Stage, read_documents, read_policy_dir
from tiermesh.rego import UNDEFINED, OpaLibraryEngine, PolicyError, RegorusEngine

__all__ = ["app", "parse_time"]

app = typer.Typer(no_args_is_help=True, help="Query, verify and replay the decision audit trail.")

_DB_ENV = "TIERMESH_AUDIT_DB"
_POLL_S = 0.5

DbOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--db",
        help=f"Audit database (default ${_DB_ENV}, else the running `tiermesh up`'s, else"
        " ./audit.sqlite3); repeat it to read several replicas' databases as one.",
    ),
]
SpoolOpt = Annotated[
    Path | None, typer.Option("--spool", help="A node's decision-log spool directory.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON record per line.")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From this time: RFC 3339, or 30m / 2h / 7d ago.")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Before this time (as --since).")]
_KINDS = ("request", "plan", "model_verification")


def _kind(text: str | None, *, allow_all: bool = False) -> DecisionKind | None:
    if text is None or (allow_all and text == "all"):
        return None
    if text not in _KINDS:
        choices = ", ".join(_KINDS) + (" or all" if allow_all else "")
        raise typer.BadParameter(choices, param_hint="--kind")
    return cast("DecisionKind", text)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def parse_time(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """RFC 3339 (a naive time is UTC) or a duration ago: ``90s``, ``30m``, ``2h``, ``7d``.

    Raises:
        ValueError: neither form.
    """
    value = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[:-1].isdigit() and value[-1:] in units:
        base = now or dt.datetime.now(dt.UTC)
        return base - dt.timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"expected RFC 3339 or a duration such as 30m, got {text!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _time_option(text: str | None, name: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from exc


def _db_path(db: Path | None) -> tuple[Path, NotRunning | None]:
    """One ``--db``, else ``$TIERMESH_AUDIT_DB``, else the running ``tiermesh up``'s database,
    else ``./audit.sqlite3`` (with why no ``up`` was found)."""
    if db is not None:
        return db, None
    if os.environ.get(_DB_ENV):
        return Path(os.environ[_DB_ENV]), None
    try:
        return Path(read_running().audit_db), None
    except NotRunning as exc:
        return Path("audit.sqlite3"), exc


def _open_store(db: list[Path] | None) -> AuditStore:
    if db is not None and len(db) > 1:
        return _merged(db)
    path, missing = _db_path(db[0] if db else None)
    if not path.is_file():
        hint = f"; {missing}" if missing is not None else ""
        _fail(f"no audit database at {path}{hint}")
    try:
        return AuditStore(path)
    except AuditError as exc:
        _fail(str(exc))


def _merged(paths: list[Path]) -> AuditStore:
    """Several replicas' databases as one in-memory store (module doc)."""
    for path in paths:
        if not path.is_file():
            _fail(f"no audit database at {path}")
    try:
        store, report = merge_stores(paths)
    except AuditError as exc:
        _fail(str(exc))
    typer.echo(
        f"merged {len(paths)} databases: {report.records} records,"
        f" {report.duplicates} duplicate copies dropped, {len(report.conflicts)} conflicting",
        err=True,
    )
    for decision_id in report.conflicts[:20]:
        typer.echo(
            f"CONFLICT decision {decision_id}: stored differently in two databases", err=True
        )
    return store


def _one_source(db: list[Path] | None, spool: Path | None) -> None:
    if db is not None and spool is not None:
        raise typer.BadParameter("give --db or --spool, not both")


def _line(record: DecisionRecord) -> str:
    result = json.dumps(record.result, sort_keys=True, separators=(",", ":"))
    if len(result) > 80:
        result = result[:77] + "..."
    return (
        f"{record.timestamp:%Y-%m-%dT%H:%M:%S.%fZ} {record.node_spiffe_id} #{record.seq} "
        f"{record.kind} {record.path} {record.decision_id} {result}"
    )


def _emit(records: Iterable[DecisionRecord], as_json: bool) -> None:
    for record in records:
        typer.echo(record.model_dump_json() if as_json else _line(record))


def _spool_records(spool: Path) -> list[DecisionRecord]:
    try:
        return [item.record for item in read_spool(spool)]
    except (SpoolCorruptedError, FileNotFoundError) as exc:
        _fail(str(exc))


@app.command("tail")
def tail(
    db: DbOpt = None,
    spool: SpoolOpt = None,
    count: Annotated[int, typer.Option("-n", "--lines", min=0, help="How many.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print the latest decisions (arrival order), optionally following new ones."""
    _one_source(db, spool)
    if spool is not None:
        seen = _spool_records(spool)
        _emit(seen[-count:] if count else [], as_json)
        last = seen[-1].seq if seen else -1
        while follow:
            time.sleep(_POLL_S)
            fresh = [r for r in _spool_records(spool) if r.seq > last]
            _emit(fresh, as_json)
            last = fresh[-1].seq if fresh else last
        return
    if follow and db is not None and len(db) > 1:
        _fail("--follow reads one database; give one --db")
    with _open_store(db) as store:
        rows = store.tail(count) if count else []
        _emit((row.record for row in rows), as_json)
        rowid = rows[-1].rowid if rows else (store.tail(1)[-1].rowid if store.tail(1) else 0)
        while follow:
            time.sleep(_POLL_S)
            rows = store.after(rowid)
            _emit((row.record for row in rows), as_json)
            rowid = rows[-1].rowid if rows else rowid


@app.command("query")
def query(
    db: DbOpt = None,
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    tier: Annotated[str | None, typer.Option("--tier")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    decision_id: Annotated[str | None, typer.Option("--decision-id")] = None,
    outcome: Annotated[str | None, typer.Option("--outcome", help="allow, deny, plan …")] = None,
    node: Annotated[str | None, typer.Option("--node", help="The node's SPIFFE ID.")] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="request (ext_authz verdicts), plan (routing plans) or model_verification "
            "(a node's model signature checks).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Decisions matching every given filter, in time order. A plan record's node is the
    node the plan was made for; its outcome is ``published`` or ``refused``."""
    filters = AuditQuery(
        tenant=tenant,
        tier=tier,
        since=_time_option(since, "--since"),
        until=_time_option(until, "--until"),
        decision_id=decision_id,
        outcome=outcome,
        node=node,
        kind=_kind(kind),
        limit=limit,
    )
    with _open_store(db) as store:
        _emit((row.record for row in store.query(filters)), as_json)


@app.command("plan")
def plan_cmd(
    decision_id: Annotated[str, typer.Argument(help="A plan record's decision id.")],
    db: DbOpt = None,
) -> None:
    """The whole plan a plan record names, as JSON: the record's own part joined with its
    plan body (stored once for every node that shares it), checked against the record's
    signed ``plan_sha256``. Exits 2 when there is no such plan record, 1 when its body was
    not stored (too large) or was altered."""
    with _open_store(db) as store:
        found = store.query(AuditQuery(decision_id=decision_id, limit=1))
        if not found or found[0].record.kind != "plan":
            _fail(f"no plan record {decision_id}")
        result = found[0].record.result
        if not isinstance(result, dict):
            _fail(f"record {decision_id} holds no plan")
        try:
            plan = recorded_plan(result, store.plan_body)
        except AuditError as exc:
            _fail(str(exc), code=1)
    if plan is None:
        _fail(
            f"record {decision_id} names plan {result.get('plan_sha256')} but its body"
            " was not stored (larger than the recorder's limit): only its summary is kept",
            code=1,
        )
    typer.echo(json.dumps(plan, indent=2, sort_keys=True))


def _report(problems: list[ChainProblem], checked: int, nodes: int) -> None:
    if problems:
        for problem in problems:
            typer.echo(f"FAIL {problem}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"ok: {checked} records of {nodes} node(s); chains and signatures verify")


def _verify_spool(spool: Path, bundle: Path | None) -> None:
    try:
        items = list(read_spool(spool))
    except (SpoolCorruptedError, FileNotFoundError) as exc:
        typer.echo(f"FAIL {exc}", err=True)
        raise typer.Exit(code=1) from exc
    signers = load_signers(spool)
    keys = signer_keys(signers)
    by_id = {item.record.decision_id: item.signer for item in items}
    records = [item.record for item in items]
    pruned = bool(records) and records[0].seq > 0
    problem = verify_chain(
        records, key_for=lambda r: keys.get(by_id[r.decision_id]), from_genesis=not pruned
    )
    if problem is None and bundle is not None:
        roots = bundle.read_bytes()
        for item in items:
            try:
                verify(item.record, signers[item.signer], roots)
            except SignatureInvalid as exc:
                record = item.record
                problem = ChainProblem(
                    record.node_spiffe_id, record.seq, str(record.decision_id), exc.reason
                )
                break
    _report([problem] if problem else [], len(records), 1 if records else 0)


def _verify_db(db: list[Path] | None) -> None:
    with _open_store(db) as store:
        outcome = verify_store(store)
    for chain in outcome.unreadable:
        typer.echo(f"FAIL node {chain}: a stored record is unreadable", err=True)
    for problem in outcome.bodies:
        typer.echo(f"FAIL {problem}", err=True)
    if outcome.unreadable or outcome.bodies:
        raise typer.Exit(code=1)
    _report(list(outcome.problems), outcome.checked, outcome.chains)


@app.command("verify")
def verify_cmd(
    db: DbOpt = None,
    spool: SpoolOpt = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="With --spool: also check signers chain to these roots."),
    ] = None,
) -> None:
    """Check every node's hash chain and signatures.

    Exits 1 naming the first bad record of each broken chain (an edited, deleted,
    re-linked or forged record).
    """
    _one_source(db, spool)
    if spool is not None:
        _verify_spool(spool, bundle)
    else:
        _verify_db(db)


def _engine(name: str) -> RegorusEngine | OpaLibraryEngine:
    if name == "opa":
        return OpaLibraryEngine()
    if name != "regorus":
        raise typer.BadParameter("regorus or opa", param_hint="--engine")
    return RegorusEngine()


def _evaluator(engine: RegorusEngine | OpaLibraryEngine) -> Any:
    def evaluate(path: str, data: Any) -> Any:
        value = engine.evaluate(path, data)
        return None if value is UNDEFINED else value

    return evaluate


def _money(value: float) -> str:
    return f"{value:+.4f}"


def _print_report(report: ReplayReport, limit: int) -> None:
    console = Console()
    table = Table(title="Decisions that would change, per tenant")
    for column in ("tenant", "replayed", "changed", "cost delta (USD)", "unknown cost"):
        table.add_column(column, justify="left" if column == "tenant" else "right")
    for summary in sorted(report.tenants.values(), key=lambda s: s.tenant):
        table.add_row(
            summary.tenant,
            str(summary.replayed),
            str(summary.changed),
            _money(summary.cost_delta),
            str(summary.unknown_cost),
        )
    console.print(table)
    if report.changes:
        changes = Table(title=f"Changed decisions (first {min(limit, len(report.changes))})")
        for column in ("decision", "tenant", "recorded", "candidate", "cost delta"):
            changes.add_column(column)
        for change in report.changes[:limit]:
            changes.add_row(
                change.decision_id,
                change.tenant,
                json.dumps(change.old_result, sort_keys=True),
                json.dumps(change.new_result, sort_keys=True),
                "?" if change.cost_delta is None else _money(change.cost_delta),
            )
        console.print(changes)
    for decision_id, message in report.errors:
        console.print(f"[red]error[/red] {decision_id}: {message}")
    console.print(
        f"{report.replayed} replayed, {len(report.changes)} would change, "
        f"{len(report.errors)} failed, {report.skipped} skipped"
    )


def _records_for_replay(
    store: AuditStore,
    since: dt.datetime | None,
    until: dt.datetime | None,
    kind: DecisionKind | None,
) -> Iterator[DecisionRecord]:
    page_since = since
    seen: set[str] = set()
    while True:
        rows = store.query(AuditQuery(kind=kind, since=page_since, until=until, limit=5000))
        fresh = [row for row in rows if str(row.record.decision_id) not in seen]
        for row in fresh:
            seen.add(str(row.record.decision_id))
            yield row.record
        if len(rows) < 5000 or not fresh:
            return
        page_since = rows[-1].record.timestamp


@app.command("replay")
def replay_cmd(
    policy: Annotated[Path, typer.Option("--policy", help="Candidate policy directory.")],
    db: DbOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    engine_name: Annotated[str, typer.Option("--engine", help="regorus or opa.")] = "regorus",
    limit: Annotated[int, typer.Option("--limit", min=1, help="Changed rows shown.")] = 50,
    kind: Annotated[
        str, typer.Option("--kind", help="request, plan, model_verification or all.")
    ] = "all",
    as_json: JsonOpt = False,
    fail_on_change: Annotated[
        bool, typer.Option("--fail-on-change", help="Exit 1 when any decision changes.")
    ] = False,
) -> None:
    """Show which recorded decisions a candidate policy would change.

    Re-evaluates each record's path with its stored input under --policy, per tenant, with
    the cost delta where it can be known (the rule is in tiermesh.controlplane.audit.replay).
    Plan records compare plan digests and are listed under the tenant "(plans)"; the
    candidate's data.usage is empty unless its data sets it.
    """
    kind_filter = _kind(kind, allow_all=True)
    try:
        documents = read_documents(read_policy_dir(policy, provenance=False).files)
    except BundleReadError as exc:
        _fail(str(exc))
    fatal = [f for f in documents.findings if f.stage in (Stage.READ, Stage.DATA)]
    if fatal:
        _fail("; ".join(str(f) for f in fatal))
    engine = _engine(engine_name)
    try:
        data = dict(documents.data)
        data.setdefault("usage", {})
        engine.load(documents.modules, data)
        with _open_store(db) as store:
            records = _records_for_replay(
                store, _time_option(since, "--since"), _time_option(until, "--until"), kind_filter
            )
            report = replay(records, _evaluator(engine), documents.catalog)
    except PolicyError as exc:
        _fail(f"the candidate policy does not load: {exc}")
    finally:
        engine.close()
    if as_json:
        for change in report.changes:
            typer.echo(
                json.dumps(
                    {
                        "decision_id": change.decision_id,
                        "tenant": change.tenant,
                        "recorded": change.old_result,
                        "candidate": change.new_result,
                        "cost_delta": change.cost_delta,
                    },
                    sort_keys=True,
                )
            )
    else:
        _print_report(report, limit)
    if report.errors or (fail_on_change and report.changes):
        raise typer.Exit(code=1)
