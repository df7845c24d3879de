"""Shipping over real mTLS gRPC: outages, lost acks, rotation, and foreign records."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import hashes

from tests.integration.audit.conftest import ControlPlane, material_for, signing
from tests.unit.decisionlog.helpers import entry, new_ca
from tiermesh.agents.decisionlog import (
    DecisionLog,
    ShipFailed,
    Shipper,
    StaticSigner,
    read_cursor,
)
from tiermesh.agents.decisionlog.spool import write_cursor
from tiermesh.agents.identity import Backoff, SvidMaterial
from tiermesh.controlplane.api import (
    DecisionRecord,
    ShipRequest,
    record_hash,
    signature_valid_for_hash,
)
from tiermesh.controlplane.audit import AuditQuery, verify_chain
from tiermesh.controlplane.audit import collector as collector_module
from tiermesh.controlplane.audit.collector import linked_runs

FAST = Backoff(initial=0.02, factor=2.0, maximum=0.1, jitter=0.0)


def stored(cp: ControlPlane) -> list[str]:
    return [str(s.record.decision_id) for s in cp.store.query(AuditQuery(limit=10_000))]


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` every 20 ms for at most 10 s (the state lives in other tasks)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within 10 s")


async def test_down_then_up_delivers_exactly_once_even_when_an_ack_is_lost(
    cp: ControlPlane, tmp_path: Path
) -> None:
    material = material_for(cp.ca, "edge-1")
    await cp.stop()  # the control plane is down
    async with DecisionLog(tmp_path / "spool", StaticSigner(signing(material))) as log:
        records = [await log.append(entry(i)) for i in range(30)]
        shipper = Shipper(log, cp.client(material), batch=7, interval_s=0.05, backoff=FAST)
        task = asyncio.create_task(shipper.run())
        try:
            await wait_for(lambda: shipper.failures >= 2)
            assert stored(cp) == []
            await cp.start()
            await wait_for(lambda: len(stored(cp)) == 30)
            await wait_for(lambda: read_cursor(log.directory) == 29)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # The ack of everything was lost: the cursor goes back and all is shipped again.
        write_cursor(log.directory, -1)
        again = Shipper(log, cp.client(material), batch=500, prune=False)
        assert await again.ship_once() == 30
    ids = stored(cp)
    assert sorted(ids) == sorted(str(r.decision_id) for r in records)
    chain = [s.record for s in cp.store.chain(material.spiffe_id)]
    assert [r.seq for r in chain] == list(range(30))
    signers = cp.store.signers()
    assert (
        verify_chain(chain, key_for=lambda r: None if not signers else material.leaf.public_key())
        is None
    )


async def test_a_restarted_agent_resumes_from_its_cursor(cp: ControlPlane, tmp_path: Path) -> None:
    material = material_for(cp.ca, "edge-1")
    spool = tmp_path / "spool"
    async with DecisionLog(spool, StaticSigner(signing(material))) as log:
        for index in range(12):
            await log.append(entry(index))
        assert await Shipper(log, cp.client(material), batch=5).ship_once() == 5
    async with DecisionLog(spool, StaticSigner(signing(material))) as log:
        shipper = Shipper(log, cp.client(material), batch=500)
        assert await shipper.acknowledged_seq() == 4
        assert await shipper.ship_once() == 7
        assert await shipper.ship_once() == 0
    assert len(stored(cp)) == 12


async def test_records_signed_before_a_rotation_are_accepted(
    cp: ControlPlane, tmp_path: Path
) -> None:
    old, new = material_for(cp.ca, "edge-1"), material_for(cp.ca, "edge-1")
    async with DecisionLog(tmp_path / "spool", StaticSigner(signing(old))) as log:
        for index in range(3):
            await log.append(entry(index))
    async with DecisionLog(tmp_path / "spool", StaticSigner(signing(new))) as log:
        for index in range(3, 6):
            await log.append(entry(index))
        assert await Shipper(log, cp.client(new)).ship_once() == 6
    assert len(cp.store.signers()) == 2
    assert len(stored(cp)) == 6
    # One linked run whose ends have different signers: each record is stored as its own.
    by_seq = {s.record.seq: s.signer for s in cp.store.query(AuditQuery(limit=100))}
    old_fp, new_fp = (m.leaf.fingerprint(hashes.SHA256()).hex() for m in (old, new))
    assert [by_seq[seq] for seq in range(6)] == [old_fp] * 3 + [new_fp] * 3


async def test_a_record_claiming_another_node_is_permission_denied(
    cp: ControlPlane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    thief, victim = material_for(cp.ca, "edge-1"), material_for(cp.ca, "edge-2")
    async with DecisionLog(tmp_path / "spool", StaticSigner(signing(victim))) as log:
        record = await log.append(entry(0))
    with (
        caplog.at_level(logging.WARNING, logger="tiermesh.audit"),
        pytest.raises(ShipFailed) as info,
    ):
        await cp.client(thief).ship(ShipRequest(records=(record,)))
    assert info.value.reason.startswith("PERMISSION_DENIED")
    assert not info.value.retryable
    assert "edge-2" in caplog.text
    assert "PERMISSION_DENIED" in caplog.text
    assert stored(cp) == []


async def test_a_tampered_record_is_refused_and_names_it(cp: ControlPlane, tmp_path: Path) -> None:
    material = material_for(cp.ca, "edge-1")
    async with DecisionLog(tmp_path / "spool", StaticSigner(signing(material))) as log:
        record = await log.append(entry(0))
    edited = record.model_copy(update={"result": {"allow": False}})
    with pytest.raises(ShipFailed) as info:
        await cp.client(material).ship(ShipRequest(records=(edited,)))
    assert info.value.reason.startswith(grpc.StatusCode.INVALID_ARGUMENT.name)
    assert str(record.decision_id) in info.value.reason
    assert stored(cp) == []


def rewritten_from(records: list[DecisionRecord], index: int) -> list[DecisionRecord]:
    """``records`` with ``records[index]`` edited and every hash from there on made again
    (links included) by someone without the node's key: the old signatures stay."""
    out = list(records[:index])
    for position, record in enumerate(records[index:], start=index):
        update: dict[str, object] = {} if position > index else {"result": {"allow": False}}
        if out:
            update["prev_hash"] = out[-1].hash
        changed = record.model_copy(update=update)
        out.append(changed.model_copy(update={"hash": record_hash(changed)}))
    return out


async def test_a_linked_batch_costs_two_signature_checks(
    cp: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    material = material_for(cp.ca, "edge-1")
    checked: list[int] = []

    def counting(record: DecisionRecord, key: object) -> bool:
        checked.append(record.seq)
        return signature_valid_for_hash(record, key)

    monkeypatch.setattr(collector_module, "signature_valid_for_hash", counting)
    async with DecisionLog(tmp_path / "spool", StaticSigner(signing(material))) as log:
        for index in range(40):
            await log.append(entry(index))
        assert await Shipper(log, cp.client(material), batch=500).ship_once() == 40
    assert sorted(checked) == [0, 39]
    assert len(stored(cp)) == 40
    fingerprint = material.leaf.fingerprint(hashes.SHA256()).hex()
    assert {s.signer for s in cp.store.query(AuditQuery(limit=100))} == {fingerprint}


async def ten_records(cp: ControlPlane, spool: Path) -> tuple[SvidMaterial, list[DecisionRecord]]:
    """A node's identity and the first ten records of its chain."""
    material = material_for(cp.ca, "edge-1")
    async with DecisionLog(spool, StaticSigner(signing(material))) as log:
        return material, [await log.append(entry(index)) for index in range(10)]


async def test_a_chain_rewritten_without_the_nodes_key_is_refused(
    cp: ControlPlane, tmp_path: Path
) -> None:
    material, records = await ten_records(cp, tmp_path / "spool")
    forged = rewritten_from(records, 4)
    assert linked_runs(forged) == [(0, 9)]  # every hash and link checks out
    with pytest.raises(ShipFailed) as info:
        await cp.client(material).ship(ShipRequest(records=tuple(forged)))
    assert info.value.reason.startswith(grpc.StatusCode.INVALID_ARGUMENT.name)
    assert str(records[9].decision_id) in info.value.reason  # the head's signature fails
    assert stored(cp) == []


async def test_a_re_hashed_middle_record_is_refused_and_named(
    cp: ControlPlane, tmp_path: Path
) -> None:
    material, records = await ten_records(cp, tmp_path / "spool")
    edited = rewritten_from(records, 4)[4]
    shipped = (*records[:4], edited, *records[5:])
    assert linked_runs(shipped) == [(0, 4), (5, 9)]  # seq 5 no longer links to it
    with pytest.raises(ShipFailed) as info:
        await cp.client(material).ship(ShipRequest(records=shipped))
    assert str(records[4].decision_id) in info.value.reason
    assert stored(cp) == []


def test_linked_runs_break_at_a_gap_or_a_broken_link(tmp_path: Path) -> None:
    material = material_for(new_ca(), "edge-1")

    async def make() -> list[DecisionRecord]:
        async with DecisionLog(tmp_path / "spool", StaticSigner(signing(material))) as log:
            return [await log.append(entry(index)) for index in range(6)]

    records = asyncio.run(make())
    assert linked_runs(records) == [(0, 5)]
    assert linked_runs([*records[:2], *records[3:]]) == [(0, 1), (2, 4)]
    unlinked = records[4].model_copy(update={"prev_hash": records[0].hash})
    assert linked_runs([*records[:4], unlinked, records[5]]) == [(0, 3), (4, 5)]
    assert linked_runs([]) == []
    assert linked_runs(records[2:3]) == [(0, 0)]
