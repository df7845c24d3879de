"""``tiermesh audit``: verify names the first edited or deleted record; query, tail, replay."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.unit.decisionlog.helpers import identity_for, new_ca, segment_files
from tiermesh.agents.decisionlog import (
    DecisionEntry,
    DecisionLog,
    StaticSigner,
    load_signers,
    read_spool,
)
from tiermesh.cli.audit_cmd import app, parse_time
from tiermesh.controlplane.api import DecisionRecord
from tiermesh.controlplane.audit import AuditStore
from tiermesh.rego import RegorusEngine

POLICY = Path(__file__).with_name("policy")
CANDIDATE_REGO = """package tiermesh.request

decision := {"allow": true, "tier": "local"} if {
	count(input.findings) > 0
} else := {"allow": true, "tier": "local"} if {
	input.token_estimate < 150
} else := {"allow": true, "tier": "cloud"}
"""

runner = CliRunner()


def request_input(index: int) -> dict[str, Any]:
    return {
        "tenant": "acme" if index < 6 else "globex",
        "body": f"prompt number {index}",
        "findings": [] if index % 2 else [{"detector": "email"}],
        "token_estimate": 100 + 10 * index,
    }


async def build(tmp_path: Path, count: int = 12) -> tuple[Path, Path, list[DecisionRecord]]:
    """A spool and a database holding the same ``count`` decisions of policy v1."""
    engine = RegorusEngine()
    engine.load({"request.rego": (POLICY / "request" / "request.rego").read_text()})
    spool, db = tmp_path / "spool", tmp_path / "audit.sqlite3"
    records = []
    async with DecisionLog(spool, StaticSigner(identity_for(new_ca()))) as log:
        for index in range(count):
            data = request_input(index)
            result = engine.evaluate("data.tiermesh.request.decision", data)
            item = DecisionEntry(path="tiermesh/request/decision", input=data, result=result)
            records.append(await log.append(item))
    engine.close()
    with AuditStore(db) as store:
        spooled = list(read_spool(spool))
        store.insert([(s.record, s.signer) for s in spooled], load_signers(spool))
    return spool, db, records


def rewrite_spool_line(spool: Path, seq: int, change: Any) -> None:
    segment = segment_files(spool)[0]
    lines = segment.read_bytes().splitlines(keepends=True)
    wrapper = json.loads(lines[seq])
    if change is None:
        del lines[seq]
    else:
        change(wrapper["record"])
        lines[seq] = json.dumps(wrapper).encode() + b"\n"
    segment.write_bytes(b"".join(lines))


def edit_result(record: dict[str, Any]) -> None:
    record["result"]["tier"] = "private"


async def test_verify_names_an_edited_spool_record(tmp_path: Path) -> None:
    spool, _, records = await build(tmp_path)
    assert runner.invoke(app, ["verify", "--spool", str(spool)]).exit_code == 0
    rewrite_spool_line(spool, 4, edit_result)
    result = runner.invoke(app, ["verify", "--spool", str(spool)])
    assert result.exit_code == 1
    assert f"seq 4 (decision {records[4].decision_id})" in result.output
    assert "edited" in result.output


async def test_verify_names_a_deleted_spool_record(tmp_path: Path) -> None:
    spool, _, records = await build(tmp_path)
    rewrite_spool_line(spool, 7, None)
    result = runner.invoke(app, ["verify", "--spool", str(spool)])
    assert result.exit_code == 1
    assert f"seq 8 (decision {records[8].decision_id})" in result.output
    assert "seq 7 missing" in result.output


async def test_verify_names_edited_and_deleted_database_records(tmp_path: Path) -> None:
    _, db, records = await build(tmp_path)
    ok = runner.invoke(app, ["verify", "--db", str(db)])
    assert ok.exit_code == 0, ok.output
    assert "12 records" in ok.output
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT record FROM records WHERE decision_id = ?", (str(records[3].decision_id),)
        ).fetchone()
        edited = json.loads(row[0])
        edit_result(edited)
        conn.execute(
            "UPDATE records SET record = ? WHERE decision_id = ?",
            (json.dumps(edited), str(records[3].decision_id)),
        )
    conn.close()
    result = runner.invoke(app, ["verify", "--db", str(db)])
    assert result.exit_code == 1
    assert f"seq 3 (decision {records[3].decision_id})" in result.output
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM records WHERE decision_id = ?", (str(records[3].decision_id),))
    conn.close()
    result = runner.invoke(app, ["verify", "--db", str(db)])
    assert result.exit_code == 1
    assert f"seq 4 (decision {records[4].decision_id})" in result.output
    assert "seq 3 missing" in result.output


async def test_query_and_tail(tmp_path: Path) -> None:
    spool, db, records = await build(tmp_path)
    result = runner.invoke(app, ["query", "--db", str(db), "--tenant", "globex", "--json"])
    assert result.exit_code == 0, result.output
    found = [DecisionRecord.model_validate_json(line) for line in result.output.splitlines()]
    assert [r.decision_id for r in found] == [r.decision_id for r in records[6:]]
    assert all("prompt number" not in line for line in result.output.splitlines())
    by_tier = runner.invoke(app, ["query", "--db", str(db), "--tier", "local", "--json"])
    assert len(by_tier.output.splitlines()) == 6
    one = runner.invoke(
        app, ["query", "--db", str(db), "--decision-id", str(records[5].decision_id)]
    )
    assert str(records[5].decision_id) in one.output
    assert len(one.output.splitlines()) == 1
    future = runner.invoke(app, ["query", "--db", str(db), "--since", "2999-01-01T00:00:00Z"])
    assert future.output == ""
    for source in (["--db", str(db)], ["--spool", str(spool)]):
        tail = runner.invoke(app, ["tail", *source, "-n", "3"])
        assert tail.exit_code == 0, tail.output
        assert [line.split()[5] for line in tail.output.splitlines()] == [
            str(r.decision_id) for r in records[-3:]
        ]


def test_parse_time_accepts_rfc3339_and_durations() -> None:
    assert parse_time("2026-01-01T00:00:00Z").isoformat() == "2026-01-01T00:00:00+00:00"
    base = parse_time("2026-01-01T12:00:00+00:00")
    assert parse_time("2h", now=base).hour == 10
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time("yesterday")


async def test_replay_reports_exactly_the_decisions_that_change(tmp_path: Path) -> None:
    _, db, records = await build(tmp_path)
    same = runner.invoke(app, ["replay", "--policy", str(POLICY), "--db", str(db), "--json"])
    assert same.exit_code == 0, same.output
    assert same.output == ""

    candidate = tmp_path / "candidate"
    shutil.copytree(POLICY, candidate)
    (candidate / "request" / "request.rego").write_text(CANDIDATE_REGO)
    result = runner.invoke(app, ["replay", "--policy", str(candidate), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    changes = [json.loads(line) for line in result.output.splitlines()]
    # No findings and under 150 tokens: records 1 (110 tokens) and 3 (130 tokens).
    assert [c["decision_id"] for c in changes] == [
        str(records[1].decision_id),
        str(records[3].decision_id),
    ]
    assert all(
        c["recorded"]["tier"] == "cloud" and c["candidate"]["tier"] == "local" for c in changes
    )
    assert [round(c["cost_delta"], 8) for c in changes] == [-0.00033, -0.00039]

    table = runner.invoke(app, ["replay", "--policy", str(candidate), "--db", str(db)])
    assert table.exit_code == 0, table.output
    assert "acme" in table.output
    assert "-0.0007" in table.output
    assert "12 replayed, 2 would change" in table.output
    gate = runner.invoke(
        app, ["replay", "--policy", str(candidate), "--db", str(db), "--fail-on-change"]
    )
    assert gate.exit_code == 1
