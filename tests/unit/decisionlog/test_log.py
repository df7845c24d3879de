"""The durable log: appends, segments, torn tails, corrupt segments."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.unit.decisionlog.helpers import entry, identity_for, new_ca, segment_files
from tiermesh.agents.decisionlog import (
    DecisionLog,
    DecisionLogClosed,
    Shipper,
    SpoolCorruptedError,
    StaticSigner,
    load_signers,
    read_spool,
    verify,
)
from tiermesh.agents.decisionlog.spool import SpoolReader, data_end
from tiermesh.controlplane.api import ShipRequest, ShipResponse
from tiermesh.controlplane.audit import verify_chain
from tiermesh.controlplane.identity import LocalCertificateAuthority


@pytest.fixture(scope="module")
def ca() -> LocalCertificateAuthority:
    return new_ca()


@pytest.fixture(scope="module")
def signer(ca: LocalCertificateAuthority) -> StaticSigner:
    return StaticSigner(identity_for(ca))


def assert_spool_verifies(spool: Path, ca: LocalCertificateAuthority) -> int:
    spooled = list(read_spool(spool))
    assert verify_chain([s.record for s in spooled]) is None
    signers = load_signers(spool)
    for item in spooled:
        verify(item.record, signers[item.signer], ca.bundle().to_pem())
    return len(spooled)


async def test_appends_return_durable_chained_records(
    tmp_path: Path, signer: StaticSigner, ca: LocalCertificateAuthority
) -> None:
    async with DecisionLog(tmp_path, signer, segment_bytes=8 * 1024) as log:
        first = await log.append(entry(0))
        many = []
        for start in range(1, 191, 10):
            many += await asyncio.gather(*(log.append(entry(i)) for i in range(start, start + 10)))
        assert log.durable_seq == 190
    assert first.seq == 0
    assert [r.seq for r in many] == list(range(1, 191))
    assert "please summarise" not in first.model_dump_json()
    assert len(segment_files(tmp_path)) > 3
    # A segment is cut before a batch that would cross the bound (one batch never splits).
    assert all(p.stat().st_size <= 8 * 1024 + 10 * 1024 for p in segment_files(tmp_path))
    assert assert_spool_verifies(tmp_path, ca) == 191
    async with DecisionLog(tmp_path, signer) as log:
        assert (await log.append(entry(191))).seq == 191
    with pytest.raises(DecisionLogClosed):
        await log.append(entry(0))


async def test_a_torn_last_line_is_cut_and_the_chain_continues(
    tmp_path: Path, signer: StaticSigner, ca: LocalCertificateAuthority
) -> None:
    async with DecisionLog(tmp_path, signer) as log:
        for index in range(5):
            await log.append(entry(index))
    last = segment_files(tmp_path)[-1]
    size = last.stat().st_size
    with last.open("ab") as handle:
        handle.write(b'{"fp":"abc","record":{"version":"v1","decision_')
    async with DecisionLog(tmp_path, signer) as log:
        assert log.quarantined == ()
        assert (await log.append(entry(5))).seq == 5
    assert last.stat().st_size > size
    assert assert_spool_verifies(tmp_path, ca) == 6


async def test_a_corrupt_segment_is_quarantined_and_named(
    tmp_path: Path,
    signer: StaticSigner,
    ca: LocalCertificateAuthority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with DecisionLog(tmp_path, signer, segment_bytes=4 * 1024) as log:
        for index in range(40):
            await log.append(entry(index))
    segments = segment_files(tmp_path)
    assert len(segments) >= 3
    bad = segments[1]
    lines = bad.read_bytes().splitlines(keepends=True)
    lines[2] = b"this is not json\n"
    bad.write_bytes(b"".join(lines))

    with pytest.raises(SpoolCorruptedError) as info:
        list(read_spool(tmp_path))
    assert info.value.segment == bad
    assert info.value.line == 3
    assert bad.name in str(info.value)

    with caplog.at_level(logging.ERROR, logger="tiermesh.agents.decisionlog"):
        async with DecisionLog(tmp_path, signer) as log:
            quarantined = log.quarantined
            record = await log.append(entry(99))
    assert quarantined[0].segment == bad
    assert quarantined[0].line == 3
    assert "not JSON" in quarantined[0].reason
    assert quarantined[0].quarantined_to.exists()
    assert quarantined[0].quarantined_to.parent == tmp_path / "quarantine"
    assert len(quarantined) == len(segments) - 1  # the bad one and every later one
    assert bad.name in caplog.text
    assert "line 3" in caplog.text
    first_of_bad = int(bad.name.split(".")[0])
    assert record.seq == first_of_bad + 2  # continues after the two good lines
    assert assert_spool_verifies(tmp_path, ca) == record.seq + 1


async def test_a_record_breaking_the_contract_fails_alone_and_takes_no_seq(
    tmp_path: Path, signer: StaticSigner, ca: LocalCertificateAuthority
) -> None:
    bad = entry(1)
    bad = type(bad)(path="not a policy path!", input=bad.input, result=bad.result)
    async with DecisionLog(tmp_path, signer) as log:
        outcomes = await asyncio.gather(
            log.append(entry(0)), log.append(bad), log.append(entry(2)), return_exceptions=True
        )
        assert isinstance(outcomes[1], ValueError)
        good = [o for o in outcomes if not isinstance(o, BaseException)]
        assert [r.seq for r in good] == [0, 1]
        assert log.next_seq == 2
        assert (await log.append(entry(3))).seq == 2
    assert assert_spool_verifies(tmp_path, ca) == 3


async def test_signing_runs_off_the_event_loop(tmp_path: Path, signer: StaticSigner) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    sign = type(signer.identity().private_key).sign

    def spy(key: object, *args: object) -> bytes:
        seen.append(threading.get_ident())
        return sign(key, *args)  # type: ignore[arg-type]

    async with DecisionLog(tmp_path, signer) as log:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(type(signer.identity().private_key), "sign", spy)
            await asyncio.gather(*(log.append(entry(i)) for i in range(8)))
    assert len(seen) == 8
    assert loop_thread not in seen


async def test_the_active_segment_is_preallocated_and_trimmed_on_close(
    tmp_path: Path, signer: StaticSigner, ca: LocalCertificateAuthority
) -> None:
    spool, copy = tmp_path / "spool", tmp_path / "copy"
    async with DecisionLog(spool, signer) as log:
        for index in range(5):
            await log.append(entry(index))
        (segment,) = segment_files(spool)
        content = segment.read_bytes()
        assert content.endswith(b"\0" * 1024), "zeros ahead of the data"
        assert [s.record.seq for s in read_spool(spool)] == [0, 1, 2, 3, 4]
        assert [s.record.seq for s in SpoolReader(spool).read(-1, 100, log.durable_seq)] == [
            0,
            1,
            2,
            3,
            4,
        ]
        shutil.copytree(spool, copy)  # what a crash leaves: the zeros stay
    assert segment.stat().st_size == data_end(segment) == content.index(b"\0")
    # A torn line in the preallocated space is a crash mid-write: cut, chain continues.
    (copied,) = segment_files(copy)
    with copied.open("r+b") as handle:
        handle.seek(data_end(copied))
        handle.write(b'{"fp":"torn')
    async with DecisionLog(copy, signer) as log:
        assert log.next_seq == 5
        assert (await log.append(entry(5))).seq == 5
    assert assert_spool_verifies(copy, ca) == 6


async def test_the_durable_tail_in_memory_is_what_the_spool_holds(
    tmp_path: Path, signer: StaticSigner
) -> None:
    async with DecisionLog(tmp_path / "spool", signer, recent=5) as log:
        assert log.recent(-1, 10) == []  # nothing durable yet
        await asyncio.gather(*(log.append(entry(i)) for i in range(8)))
        on_disk = list(read_spool(tmp_path / "spool"))
        assert log.recent(2, 10) == on_disk[3:]  # seqs 3..7: the last five
        assert log.recent(4, 2) == on_disk[5:7]
        assert log.recent(7, 10) == []  # caught up
        assert log.recent(1, 10) is None  # seq 2 fell out: the spool must be read
    async with DecisionLog(tmp_path / "spool", signer, recent=5) as log:
        assert log.recent(3, 10) is None  # a restarted log holds no tail yet
        assert log.recent(7, 10) == []


async def test_the_shipper_takes_the_tail_from_memory_and_the_rest_from_the_spool(
    tmp_path: Path, signer: StaticSigner
) -> None:
    shipped: list[ShipRequest] = []

    class Collector:
        async def ship(self, request: ShipRequest) -> ShipResponse:
            shipped.append(request)
            return ShipResponse(accepted=len(request.records), duplicates=0)

    async with DecisionLog(tmp_path / "spool", signer, recent=4) as log:
        for index in range(10):
            await log.append(entry(index))
        shipper = Shipper(log, Collector(), batch=3, prune=False)
        reads: list[int] = []
        read = SpoolReader.read

        def counted(reader: SpoolReader, after: int, limit: int, durable: int) -> list[Any]:
            reads.append(after)
            return read(reader, after, limit, durable)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SpoolReader, "read", counted)
            while await shipper.ship_once():
                pass
    assert [r.seq for request in shipped for r in request.records] == list(range(10))
    assert reads == [-1, 2]  # seqs 0..5 from the spool; 6..9 (the last four) from memory
    on_disk = [s.record for s in read_spool(tmp_path / "spool")]
    assert [r.records for r in shipped] == [tuple(on_disk[i : i + 3]) for i in range(0, 10, 3)]
