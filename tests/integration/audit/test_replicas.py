"""Audit across control-plane replicas: a node ships to whichever collector answers, and
the replicas' databases read together give each decision once and whole chains."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.integration.audit.conftest import ControlPlane, material_for, signing
from tests.integration.audit.test_collector import FAST, stored
from tests.unit.decisionlog.helpers import TRUST_DOMAIN, entry, new_ca
from tiermesh.agents.decisionlog import DecisionLog, GrpcShipClient, Shipper, StaticSigner
from tiermesh.agents.decisionlog.spool import write_cursor
from tiermesh.cli.audit_cmd import app
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.audit import AuditStore, merge_stores, verify_store
from tiermesh.controlplane.identity import utc_now
from tiermesh.controlplane.identity.server_cert import issue_server_certificate
from tiermesh.procs.ports import free_port

runner = CliRunner()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, ControlPlane]]:
    """Two replicas' collectors: one shared CA, each its own certificate and database."""
    ca = new_ca()
    planes = []
    for name in ("a", "b"):
        store = AuditStore(tmp_path / f"{name}.sqlite3")
        plane = ControlPlane(ca, issue_server_certificate(ca, now=utc_now()), store, free_port())
        await plane.start()
        planes.append(plane)
    try:
        yield planes[0], planes[1]
    finally:
        for plane in planes:
            await plane.stop()
            plane.store.close()


def client(targets: list[ControlPlane], material: object) -> GrpcShipClient:
    return GrpcShipClient(
        [f"127.0.0.1:{plane.port}" for plane in targets],
        lambda: material,  # type: ignore[arg-type,return-value]
        server_name=control_plane_dns_name(TRUST_DOMAIN),
        timeout_s=5,
    )


async def test_a_node_moves_to_the_next_collector_and_the_databases_merge_whole(
    pair: tuple[ControlPlane, ControlPlane], tmp_path: Path
) -> None:
    a, b = pair
    material = material_for(a.ca, "edge-1")
    ship = client([a, b], material)
    async with DecisionLog(tmp_path / "spool", StaticSigner(signing(material))) as log:
        first = [await log.append(entry(i)) for i in range(10)]
        shipper = Shipper(log, ship, batch=500, prune=False, backoff=FAST)
        assert await shipper.ship_once() == 10
        assert ship.target == f"127.0.0.1:{a.port}"
        await a.stop()  # replica a dies: the next batches go to b at once
        second = [await log.append(entry(i)) for i in range(10, 20)]
        assert await shipper.ship_once() == 10
        assert ship.target == f"127.0.0.1:{b.port}"
        await a.start()
        # b's acknowledgements were lost: everything is shipped again, to a (sticky on b
        # until b fails, so a fresh client stands for an agent restarted meanwhile).
        write_cursor(log.directory, -1)
        again = Shipper(log, client([a, b], material), batch=500, prune=False)
        assert await again.ship_once() == 20
    ids = {str(r.decision_id) for r in first + second}
    assert set(stored(a)) == ids
    assert set(stored(b)) == {str(r.decision_id) for r in second}
    assert not verify_store(b.store).ok  # b alone holds half a chain

    merged, report = merge_stores([tmp_path / "b.sqlite3", tmp_path / "a.sqlite3"])
    with merged:
        assert (report.records, report.duplicates, report.conflicts) == (20, 10, ())
        chain = [row.record.seq for row in merged.chain(material.spiffe_id)]
        assert chain == list(range(20))
        assert verify_store(merged).ok

    result = runner.invoke(
        app, ["verify", "--db", str(tmp_path / "a.sqlite3"), "--db", str(tmp_path / "b.sqlite3")]
    )
    assert result.exit_code == 0, result.output
    assert "merged 2 databases: 20 records, 10 duplicate copies dropped, 0 conflicting" in (
        result.output
    )
    assert "20 records" in result.output


async def test_a_decision_stored_differently_by_two_replicas_is_a_conflict(
    pair: tuple[ControlPlane, ControlPlane], tmp_path: Path
) -> None:
    a, b = pair
    material = material_for(a.ca, "edge-1")
    async with DecisionLog(tmp_path / "spool", StaticSigner(signing(material))) as log:
        records = [await log.append(entry(i)) for i in range(3)]
        for plane in (a, b):
            assert await Shipper(log, client([plane], material), prune=False).ship_once() == 3
            write_cursor(log.directory, -1)
    await asyncio.sleep(0)
    target = str(records[1].decision_id)
    with sqlite3.connect(tmp_path / "b.sqlite3") as conn:
        (text,) = conn.execute(
            "SELECT record FROM records WHERE decision_id = ?", (target,)
        ).fetchone()
        edited = json.loads(text)
        edited["result"] = {"allow": True, "tier": "cloud"}
        conn.execute(
            "UPDATE records SET record = ? WHERE decision_id = ?", (json.dumps(edited), target)
        )
    conn.close()

    _, report = merge_stores([tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"])
    assert report.conflicts == (target,)
    result = runner.invoke(
        app, ["query", "--db", str(tmp_path / "a.sqlite3"), "--db", str(tmp_path / "b.sqlite3")]
    )
    assert result.exit_code == 0, result.output
    assert f"CONFLICT decision {target}" in result.output
    follow = runner.invoke(
        app,
        ["tail", "-f", "--db", str(tmp_path / "a.sqlite3"), "--db", str(tmp_path / "b.sqlite3")],
    )
    assert follow.exit_code == 2
    assert "--follow reads one database" in follow.output
