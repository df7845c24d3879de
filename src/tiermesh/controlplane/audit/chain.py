"""Verifying a node's chain of decision records: hashes, links, sequence, signatures.

Pure functions, thread-safe. The hash and signature rules are those of
:mod:`tiermesh.controlplane.api.decision`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tiermesh.controlplane.api.decision import (
    GENESIS_HASH,
    DecisionRecord,
    record_hash,
    signature_valid,
)

__all__ = ["ChainProblem", "KeyLookup", "signature_valid", "verify_chain"]

KeyLookup = Callable[[DecisionRecord], object | None]
"""The public key that must have signed a record (None: its signer is unknown)."""


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """The first record of a chain that does not verify, and why."""

    node_spiffe_id: str
    seq: int
    decision_id: str
    reason: str

    def __str__(self) -> str:
        return (
            f"node {self.node_spiffe_id} seq {self.seq} (decision {self.decision_id}): "
            f"{self.reason}"
        )


def verify_chain(
    records: Iterable[DecisionRecord],
    *,
    key_for: KeyLookup | None = None,
    from_genesis: bool = True,
    one_node: bool = True,
) -> ChainProblem | None:
    """The first bad record of ONE chain's records (given in seq order), or None.

    For each record, in order: it names the same node as the first (unless ``one_node``
    is False: the control plane's chain of plan records names the node each plan was made
    for); its ``hash`` is the
    hash of its content (else it was edited); its ``seq`` is one more than the previous
    record's (else records were deleted — or, within the same seq, duplicated); its
    ``prev_hash`` is the previous record's ``hash``; and, with ``key_for``, its signature
    verifies with that key (a re-hashed edit fails here). ``from_genesis``: the first
    record must be seq 0 with ``prev_hash`` :data:`GENESIS_HASH` (False for a spool whose
    oldest segments were pruned: its first link cannot be checked).
    """
    previous: DecisionRecord | None = None
    node: str | None = None
    for record in records:
        problem = _problem(record, previous, node, key_for=key_for, from_genesis=from_genesis)
        if problem is not None:
            return ChainProblem(record.node_spiffe_id, record.seq, str(record.decision_id), problem)
        node = record.node_spiffe_id if one_node else None
        previous = record
    return None


def _start_problem(record: DecisionRecord) -> str | None:
    if record.seq != 0:
        return f"the chain starts at seq {record.seq}, not 0 (earlier records are missing)"
    return None if record.prev_hash == GENESIS_HASH else "prev_hash is not the genesis hash"


def _link_problem(
    record: DecisionRecord, previous: DecisionRecord | None, *, from_genesis: bool
) -> str | None:
    if previous is None:
        return _start_problem(record) if from_genesis else None
    expected = previous.seq + 1
    if record.seq < expected:
        return f"seq {record.seq} repeats or goes back (expected {expected})"
    if record.seq > expected:
        gap = (
            f"seq {expected}"
            if record.seq == expected + 1
            else f"seqs {expected}..{record.seq - 1}"
        )
        return f"{gap} missing: the chain jumps from {previous.seq} to {record.seq} (deleted?)"
    if record.prev_hash != previous.hash:
        return f"prev_hash does not link to seq {previous.seq}"
    return None


def _signature_problem(record: DecisionRecord, key_for: KeyLookup) -> str | None:
    key = key_for(record)
    if key is None:
        return "its signer certificate is unknown"
    if not signature_valid(record, key):
        return "signature does not verify with the signer's key"
    return None


def _problem(
    record: DecisionRecord,
    previous: DecisionRecord | None,
    node: str | None,
    *,
    key_for: KeyLookup | None,
    from_genesis: bool,
) -> str | None:
    if node is not None and record.node_spiffe_id != node:
        return f"belongs to another node than {node}"
    if record_hash(record) != record.hash:
        return "hash does not match the record's content (the record was edited)"
    problem = _link_problem(record, previous, from_genesis=from_genesis)
    if problem is None and key_for is not None:
        problem = _signature_problem(record, key_for)
    return problem
