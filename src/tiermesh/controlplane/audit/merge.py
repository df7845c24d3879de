"""Reading the audit databases of several control-plane replicas as one.

Each replica's collector stores what the nodes shipped to it in its own
``<data_dir>/audit.sqlite3``; a node whose replica dies ships the rest of its chain to
another, and a batch whose acknowledgement was lost may be stored by both. The chosen
design keeps the collectors independent (no shared database, nothing on the request path
waits for another replica) and merges at read time: :func:`merge_stores` copies every
record of every database into one :class:`AuditStore` (in memory by default), each
decision id once, each record in the chain it was filed in, with every signer and every
plan body (bodies are content-addressed: equal keys hold equal texts). A node's
chain is then whole again and verifies as usual; a decision id stored with different
contents in two databases is a conflict, reported (the first database's copy is kept)
and left for a person: two honest replicas never disagree about a signed record.

Plan records do not collide: each replica signs them in its own chain
(``spiffe://<td>/controlplane/<replica>``, ``--replica``), and only the leader records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tiermesh.controlplane.api.decision import DecisionRecord
from tiermesh.controlplane.audit.store import AuditStore

__all__ = ["MergeReport", "merge_stores"]

_PAGE = 1000


@dataclass(frozen=True, slots=True)
class MergeReport:
    """What a merge found: ``records`` distinct decision ids kept, ``duplicates`` copies
    dropped (the same record in more than one database), ``conflicts`` decision ids stored
    with different contents (first copy kept)."""

    sources: tuple[str, ...]
    records: int
    duplicates: int
    conflicts: tuple[str, ...]


def merge_stores(
    paths: Sequence[Path], into: AuditStore | None = None
) -> tuple[AuditStore, MergeReport]:
    """Every record of the databases at ``paths`` in ``into`` (default: a new in-memory
    store), deduplicated by decision id (module doc). The sources are only read.

    Raises:
        AuditStoreError: a database cannot be opened or read.
    """
    target = into if into is not None else AuditStore(":memory:")
    seen: dict[str, str] = {}
    duplicates = 0
    conflicts: list[str] = []
    for path in paths:
        with AuditStore(path) as source:
            signers = source.signers()
            bodies = list(source.plan_bodies())
            for start in range(0, len(bodies), _PAGE):
                target.insert([], {}, plan_bodies=dict(bodies[start : start + _PAGE]))
            last = 0
            while page := source.after(last, _PAGE):
                last = page[-1].rowid
                fresh: dict[str, list[tuple[DecisionRecord, str]]] = defaultdict(list)
                for row in page:
                    decision_id = str(row.record.decision_id)
                    text = row.record.model_dump_json()
                    if decision_id in seen:
                        duplicates += 1
                        if seen[decision_id] != text:
                            conflicts.append(decision_id)
                        continue
                    seen[decision_id] = text
                    fresh[row.chain].append((row.record, row.signer))
                for chain, records in fresh.items():
                    target.insert(records, signers, chain=chain)
    report = MergeReport(tuple(str(p) for p in paths), len(seen), duplicates, tuple(conflicts))
    return target, report
