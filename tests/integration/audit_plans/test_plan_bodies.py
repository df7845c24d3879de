"""Plan bodies (routes and backends) are stored once per distinct body, bound to the
signed records by digest: the whole plan comes back from the CLI, and an altered or
deleted body is found by ``audit verify``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.integration.audit_plans.conftest import Rig, recorder_for
from tests.integration.audit_plans.test_plan_records_shared import FLEET, fleet_outcome
from tests.unit.decisionlog.helpers import new_ca
from tiermesh.cli.audit_cmd import app
from tiermesh.controlplane.audit import (
    AuditStore,
    PlanBodyMismatch,
    body_digest,
    plan_digest,
    recorded_plan,
    verify_store,
)
from tiermesh.controlplane.reconciler import ReconcileResult

runner = CliRunner()


async def record_fleet(db: Path, *, max_plan_bytes: int | None = None) -> list[Any]:
    """Record one published reconcile of :data:`FLEET` into ``db``; its records."""
    store = AuditStore(db)
    recorder = recorder_for(new_ca(), store)
    if max_plan_bytes is not None:
        recorder._max_plan_bytes = max_plan_bytes
    result = ReconcileResult(1, True, 3, "ab" * 32, 7, tuple(node.id for node in FLEET))
    try:
        return await recorder.record(result, fleet_outcome(), {})
    finally:
        store.close()


def body_rows(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT sha256, length(body) FROM plan_bodies").fetchall()


async def test_a_fleet_stores_each_body_once_and_records_stay_small(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    records = await record_fleet(db)
    rows = body_rows(db)
    assert len(records) == len(FLEET)
    assert 1 <= len(rows) < len(FLEET)
    assert {r.result["plan_body_sha256"] for r in records} == {key for key, _ in rows}
    largest_body = max(size for _, size in rows)
    with sqlite3.connect(db) as conn:
        record_sizes = [size for (size,) in conn.execute("SELECT length(record) FROM records")]
    assert max(record_sizes) < largest_body / 4  # no record carries a route table


async def test_cli_prints_the_whole_plan_and_refuses_an_altered_body(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    records = await record_fleet(db)
    record = records[5]
    shown = runner.invoke(app, ["plan", str(record.decision_id), "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    plan = json.loads(shown.output)
    assert plan_digest(plan) == record.result["plan_sha256"]
    assert plan["node"]["id"] == FLEET[5].id
    assert plan["routes"]
    assert runner.invoke(app, ["verify", "--db", str(db)]).exit_code == 0

    key = record.result["plan_body_sha256"]
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute("SELECT body FROM plan_bodies WHERE sha256 = ?", (key,)).fetchone()
        body = json.loads(text)
        body["routes"][0]["timeout_ms"] = 1
        conn.execute(
            "UPDATE plan_bodies SET body = ? WHERE sha256 = ?",
            (json.dumps(body, sort_keys=True, separators=(",", ":")), key),
        )
    altered = runner.invoke(app, ["plan", str(record.decision_id), "--db", str(db)])
    assert altered.exit_code == 1
    assert f"plan body {key}" in altered.output
    assert "altered" in altered.output
    failed = runner.invoke(app, ["verify", "--db", str(db)])
    assert failed.exit_code == 1
    assert f"plan body {key} was altered" in failed.output


async def test_a_body_that_hashes_to_its_key_must_still_give_the_signed_plan(
    tmp_path: Path,
) -> None:
    """Another body under its own correct digest, named in place of the record's: the
    record's signed plan digest still refuses it."""
    db = tmp_path / "audit.sqlite3"
    records = await record_fleet(db)
    victim = records[0]
    with AuditStore(db) as store:
        text = store.plan_body(victim.result["plan_body_sha256"])
    assert text is not None
    body = json.loads(text)
    body["routes"] = body["routes"][1:]
    other = json.dumps(body, sort_keys=True, separators=(",", ":"))
    forged = dict(victim.result, plan_body_sha256=body_digest(other))
    with pytest.raises(PlanBodyMismatch) as raised:
        recorded_plan(forged, {body_digest(other): other}.get)
    assert raised.value.plan_sha256 == victim.result["plan_sha256"]


async def test_a_deleted_body_is_reported_missing(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    records = await record_fleet(db)
    key = records[0].result["plan_body_sha256"]
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM plan_bodies WHERE sha256 = ?", (key,))
    with AuditStore(db) as store:
        outcome = verify_store(store)
    assert not outcome.ok
    assert any(f"plan body {key} is missing" in problem for problem in outcome.bodies)


async def test_a_body_over_the_limit_keeps_only_its_digest(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    records = await record_fleet(db, max_plan_bytes=100)
    assert body_rows(db) == []
    record = records[0]
    assert record.result["plan_body_stored"] is False
    assert record.result["summary"]["routes"]
    with AuditStore(db) as store:
        assert recorded_plan(record.result, store.plan_body) is None
        assert verify_store(store).ok
    shown = runner.invoke(app, ["plan", str(record.decision_id), "--db", str(db)])
    assert shown.exit_code == 1
    assert "was not stored" in shown.output


async def test_merged_replica_databases_keep_their_bodies(tmp_path: Path) -> None:
    first, second = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    records = await record_fleet(first)
    await record_fleet(second)
    decision = str(records[3].decision_id)
    shown = runner.invoke(app, ["plan", decision, "--db", str(second), "--db", str(first)])
    assert shown.exit_code == 0, shown.output
    printed = shown.output[shown.output.index("{") :]
    assert plan_digest(json.loads(printed)) == records[3].result["plan_sha256"]


async def test_a_reconciled_push_is_recorded_with_bodies(rig: Rig) -> None:
    await rig.push()
    assert (await rig.reconcile()).ok
    for record in rig.plans():
        whole = recorded_plan(record.result, rig.audit.plan_body)
        assert whole is not None
        assert plan_digest(whole) == record.result["plan_sha256"]
    assert verify_store(rig.audit).ok
