"""Hash chain and signatures: sealed records verify; edits, deletions and forgeries do not."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.unit.decisionlog.helpers import entry, identity_for, new_ca
from tiermesh.agents.decisionlog import (
    DecisionEntry,
    Masking,
    SignatureInvalid,
    SigningIdentity,
    seal,
    sign,
    verify,
)
from tiermesh.controlplane.api import GENESIS_HASH, DecisionRecord, record_hash
from tiermesh.controlplane.audit import verify_chain

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def _now_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records are stamped during the test, not at import: the signer's SVID is issued
    during the test too, and a suite that runs for minutes would otherwise stamp records
    before the certificate that signs them was valid. The fixed microseconds check the
    timestamp's rendering; a second back keeps it from lying in the future."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=678901) - dt.timedelta(seconds=1)
    monkeypatch.setattr(__import__(__name__, fromlist=["NOW"]), "NOW", now)


def chain_of(identity: SigningIdentity, count: int) -> list[DecisionRecord]:
    records: list[DecisionRecord] = []
    prev = GENESIS_HASH
    for index in range(count):
        item = entry(index)
        record = seal(
            item, Masking().apply(item.input), seq=index, prev_hash=prev, identity=identity, now=NOW
        )
        records.append(record)
        prev = record.hash
    return records


def key_of(identity: SigningIdentity) -> object:
    return identity.chain[0].public_key()


def test_a_sealed_chain_verifies_and_survives_json() -> None:
    ca = new_ca()
    identity = identity_for(ca)
    records = chain_of(identity, 5)
    assert records[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    assert verify_chain(records, key_for=lambda _r: key_of(identity)) is None
    for record in records:
        again = DecisionRecord.model_validate_json(record.model_dump_json())
        assert record_hash(again) == record.hash
        verify(again, identity.chain_pem(), ca.bundle().to_pem())
    assert records[0].timestamp.isoformat().endswith("+00:00")
    assert f'"timestamp":"{NOW:%Y-%m-%dT%H:%M:%S}.678901Z"' in records[0].model_dump_json()


def test_an_edited_record_is_named_by_its_hash() -> None:
    identity = identity_for(new_ca())
    records = chain_of(identity, 4)
    edited = records[2].model_copy(update={"result": {"allow": False}})
    with pytest.raises(SignatureInvalid, match="hash does not match"):
        verify(edited, identity.chain_pem())
    problem = verify_chain([records[0], records[1], edited, records[3]])
    assert problem is not None
    assert (problem.seq, problem.decision_id) == (2, str(edited.decision_id))
    assert "edited" in problem.reason


def test_a_deleted_record_is_named_at_the_gap() -> None:
    identity = identity_for(new_ca())
    records = chain_of(identity, 5)
    problem = verify_chain([*records[:2], *records[3:]])
    assert problem is not None
    assert problem.seq == 3
    assert "seq 2 missing" in problem.reason
    head_cut = verify_chain(records[1:])
    assert head_cut is not None
    assert head_cut.seq == 1
    assert verify_chain(records[1:], from_genesis=False) is None


def test_a_rehashed_edit_fails_the_signature() -> None:
    ca = new_ca()
    identity, forger = identity_for(ca), identity_for(ca, "edge-2")
    records = chain_of(identity, 3)
    forged = sign(records[1].model_copy(update={"result": {"allow": False}}), forger.private_key)
    assert record_hash(forged) == forged.hash
    with pytest.raises(SignatureInvalid, match="signature does not verify"):
        verify(forged, identity.chain_pem())
    problem = verify_chain([records[0], forged, records[2]], key_for=lambda _r: key_of(identity))
    assert problem is not None
    assert problem.seq == 1
    # The relinked successor is named too once the forgery itself is accepted:
    assert verify_chain([records[0], forged, records[2]]) is not None


def test_verify_checks_the_signer_identity_and_the_bundle() -> None:
    ca, other_ca = new_ca(), new_ca()
    identity = identity_for(ca)
    record = chain_of(identity, 1)[0]
    with pytest.raises(SignatureInvalid, match="signer is"):
        verify(record, identity_for(ca, "edge-9").chain_pem())
    with pytest.raises(SignatureInvalid, match="trust bundle"):
        verify(record.model_copy(), identity.chain_pem(), other_ca.bundle().to_pem())


def test_an_old_record_still_verifies_against_its_expired_signer() -> None:
    ca = new_ca()
    identity = identity_for(ca, ttl=dt.timedelta(minutes=5))
    made = identity.chain[0].not_valid_before_utc + dt.timedelta(minutes=1)
    item = DecisionEntry(path="tiermesh/request/decision", input={}, result=None, timestamp=made)
    record = seal(item, {}, seq=0, prev_hash=GENESIS_HASH, identity=identity, now=made)
    verify(record, identity.chain_pem(), ca.bundle().to_pem())
    late = record.model_copy(update={"timestamp": made + dt.timedelta(hours=1)})
    with pytest.raises(SignatureInvalid):
        verify(sign(late, identity.private_key), identity.chain_pem(), ca.bundle().to_pem())
