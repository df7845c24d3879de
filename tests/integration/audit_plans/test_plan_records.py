"""Compile-time plans are decisions too: one signed record per node whose plan changed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from cryptography import x509
from typer.testing import CliRunner

from tests.integration.audit_plans.conftest import CHAIN, NODES, Rig, recorder_for
from tests.unit.reconciler.policyfiles import SMALL_CATALOG, policy_files, write_policy_dir
from tiermesh.cli.audit_cmd import app
from tiermesh.controlplane.api import PlanInput, record_hash
from tiermesh.controlplane.audit import (
    PLAN_RECORD_PATH,
    plan_digest,
    recorded_plan,
    verify_chain,
)

runner = CliRunner()
MOVED = SMALL_CATALOG.replace("port: 9002", "port: 9012")


def node_id(spiffe_id: str) -> str:
    return spiffe_id.rsplit("/", 1)[-1]


def chain_problem(rig: Rig) -> object:
    keys = {
        fingerprint: x509.load_pem_x509_certificates(pem.encode())[0].public_key()
        for fingerprint, pem in rig.audit.signers().items()
    }
    rows = list(rig.audit.chain(CHAIN))
    signer = {row.record.decision_id: row.signer for row in rows}
    return verify_chain(
        (row.record for row in rows),
        key_for=lambda r: keys.get(signer[r.decision_id]),
        one_node=False,
    )


async def test_a_push_records_one_plan_per_node(rig: Rig) -> None:
    await rig.push()
    result = await rig.reconcile()
    assert result.ok
    records = rig.plans()
    assert sorted(node_id(r.node_spiffe_id) for r in records) == ["edge-1", "gpu-1"]
    assert [r.seq for r in records] == [0, 1]
    served = rig.reconciler.published
    for record, node in zip(records, NODES, strict=True):
        assert record.kind == "plan"
        assert record.path == PLAN_RECORD_PATH
        assert record.node_spiffe_id == f"spiffe://mesh.example/node/{node.id}"
        assert record.input == PlanInput(node=node).model_dump(mode="json")
        assert record.result["outcome"] == "published"
        whole = recorded_plan(record.result, rig.audit.plan_body)
        assert whole is not None
        assert record.result["plan_sha256"] == plan_digest(whole)
        assert record.result["summary"]["backends"]
        assert record.bundle_revision == result.bundle_sha256
        assert record.result["provenance"] == {"git_commit": "c1"}
        assert record.etcd_revision == result.etcd_revision
        assert record.snapshot_version == served[node.id]
    assert rig.query_plans() == records
    assert chain_problem(rig) is None


async def test_an_identical_reconcile_records_nothing(rig: Rig) -> None:
    await rig.push()
    await rig.reconcile()
    before = rig.plans()
    again = await rig.reconcile()
    assert again.ok
    assert rig.plans() == before


async def test_a_changed_bundle_records_the_changed_plans(rig: Rig) -> None:
    await rig.push()
    await rig.reconcile()
    first = rig.plans()
    await rig.push(policy_files(MOVED))
    result = await rig.reconcile()
    records = rig.plans()
    new = records[len(first) :]
    assert new, "the moved cloud backend changes at least one plan"
    assert [r.seq for r in records] == list(range(len(records)))
    assert {r.bundle_revision for r in new} == {result.bundle_sha256}
    old_digest = {r.node_spiffe_id: r.result["plan_sha256"] for r in first}
    assert all(r.result["plan_sha256"] != old_digest[r.node_spiffe_id] for r in new)
    assert chain_problem(rig) is None


async def test_a_refused_reconcile_records_the_outcome_once(rig: Rig) -> None:
    await rig.push()
    await rig.reconcile()
    served = dict(rig.reconciler.published)
    first = len(rig.plans())
    rig.compiler.refused_backends = frozenset({"cloud-eu"})
    await rig.push(policy_files(MOVED))
    refused = await rig.reconcile()
    assert not refused.ok
    new = rig.plans()[first:]
    assert new
    for record in new:
        assert record.result["outcome"] == "refused"
        assert record.result["errors"]
        assert record.snapshot_version == served[node_id(record.node_spiffe_id)]
    await rig.reconcile()
    assert len(rig.plans()) == first + len(new)
    assert chain_problem(rig) is None


async def test_the_chain_continues_after_a_restart(rig: Rig) -> None:
    await rig.push()
    await rig.reconcile()
    count = len(rig.plans())
    rig.recorder = recorder_for(rig.ca, rig.audit)  # a restart: new server key, same DB
    await rig.reconcile()
    assert len(rig.plans()) == count, "the last plans are read back: nothing re-recorded"
    await rig.push(policy_files(MOVED))
    await rig.reconcile()
    records = rig.plans()
    assert len(records) > count
    assert [r.seq for r in records] == list(range(len(records)))
    assert len(rig.audit.signers()) == 2
    assert chain_problem(rig) is None


async def test_cli_queries_verifies_and_detects_tampering(rig: Rig, tmp_path: Path) -> None:
    await rig.push()
    await rig.reconcile()
    await rig.push(policy_files(MOVED))
    await rig.reconcile()
    db = tmp_path / "audit.sqlite3"
    listed = runner.invoke(app, ["query", "--db", str(db), "--kind", "plan", "--json"])
    assert listed.exit_code == 0, listed.output
    lines = [json.loads(line) for line in listed.output.splitlines()]
    assert len(lines) == len(rig.plans())
    assert {line["kind"] for line in lines} == {"plan"}
    none = runner.invoke(app, ["query", "--db", str(db), "--kind", "request"])
    assert none.exit_code == 0
    assert none.output == ""
    ok = runner.invoke(app, ["verify", "--db", str(db)])
    assert ok.exit_code == 0, ok.output
    assert f"{len(lines)} records of 1 node(s)" in ok.output

    victim = lines[1]
    edited = json.loads(json.dumps(victim))
    edited["result"]["outcome"] = "refused"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE records SET record = ? WHERE decision_id = ?",
            (json.dumps(edited), victim["decision_id"]),
        )
    bad = runner.invoke(app, ["verify", "--db", str(db)])
    assert bad.exit_code == 1
    assert f"node {CHAIN} seq 1" in bad.output
    assert "edited" in bad.output


async def test_cli_replays_plan_records(rig: Rig, tmp_path: Path) -> None:
    await rig.push()
    await rig.reconcile()
    db = tmp_path / "audit.sqlite3"
    same = write_policy_dir(tmp_path / "same")
    unchanged = runner.invoke(
        app, ["replay", "--policy", str(same), "--db", str(db), "--kind", "plan", "--json"]
    )
    assert unchanged.exit_code == 0, unchanged.output
    assert unchanged.output == ""
    candidate = write_policy_dir(tmp_path / "candidate", policy_files(MOVED))
    changed = runner.invoke(
        app, ["replay", "--policy", str(candidate), "--db", str(db), "--kind", "plan", "--json"]
    )
    assert changed.exit_code == 0, changed.output
    rows = [json.loads(line) for line in changed.output.splitlines()]
    assert rows
    assert {row["tenant"] for row in rows} == {"(plans)"}
    assert all(row["recorded"]["plan_sha256"] != row["candidate"]["plan_sha256"] for row in rows)
    table = runner.invoke(app, ["replay", "--policy", str(candidate), "--db", str(db)])
    assert f"2 replayed, {len(rows)} would change" in table.output


def rewrite(rig: Rig, sql: str, *params: str) -> None:
    with sqlite3.connect(rig.db) as conn:
        conn.execute(sql, params)


async def test_a_rehashed_edit_and_a_deletion_are_detected(rig: Rig) -> None:
    await rig.push()
    await rig.reconcile()
    await rig.push(policy_files(MOVED))
    await rig.reconcile()
    records = rig.plans()
    assert len(records) >= 3
    forged = records[0].model_copy(update={"snapshot_version": "forged"})
    forged = forged.model_copy(update={"hash": record_hash(forged)})
    update = "UPDATE records SET record = ? WHERE decision_id = ?"
    rewrite(rig, update, forged.model_dump_json(), str(forged.decision_id))
    assert "signature does not verify" in str(chain_problem(rig))
    rewrite(rig, update, records[0].model_dump_json(), str(records[0].decision_id))
    assert chain_problem(rig) is None
    rewrite(rig, "DELETE FROM records WHERE decision_id = ?", str(records[1].decision_id))
    assert "seq 1 missing" in str(chain_problem(rig))
