"""The control plane's audit database: one SQLite file of verified decision records.

Table ``records`` holds each record's JSON once per ``decision_id`` (the primary key), with
indexed columns for node + seq, chain + seq, time, tenant, tier and outcome (see
:mod:`~tiermesh.controlplane.audit.facets`), and the fingerprint of the certificate that
signed it; table ``signers`` holds each signer's chain PEM once; table ``plan_bodies``
holds each distinct plan body (a plan's routes and backends, canonical JSON) once under
its SHA-256, which the plan records that share it name (:mod:`.plans`).

``chain`` names the hash chain a record belongs to: the node's SPIFFE ID for records a
node made and shipped (the default), the control plane's chain id for the plan records it
made for nodes (:mod:`~tiermesh.controlplane.audit.plans`); ``node`` is always the
record's ``node_spiffe_id``. A database from before the column existed is upgraded on
open (``chain`` = ``node``).

Durability: WAL journal with ``synchronous=FULL``, so :meth:`AuditStore.insert` returns
only after its transaction is on disk — the collector acknowledges a batch only then.
Thread safety: one connection guarded by a lock; every method may be called from any
thread (the collector calls them through ``asyncio.to_thread``). Close it with
:meth:`AuditStore.close` (or ``with``).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tiermesh.controlplane.api.decision import DecisionKind, DecisionRecord
from tiermesh.controlplane.audit.errors import AuditStoreError
from tiermesh.controlplane.audit.facets import facets

__all__ = ["DEFAULT_DB_NAME", "AuditQuery", "AuditStore", "StoredRecord"]

DEFAULT_DB_NAME = "audit.sqlite3"
"""File name of the database in the control plane's data directory."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    decision_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    tenant TEXT,
    tier TEXT,
    outcome TEXT,
    signer TEXT NOT NULL,
    received TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_node_seq ON records (node, seq);
CREATE INDEX IF NOT EXISTS records_kind ON records (kind, ts);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE INDEX IF NOT EXISTS records_tenant ON records (tenant, ts);
CREATE INDEX IF NOT EXISTS records_tier ON records (tier, ts);
CREATE INDEX IF NOT EXISTS records_outcome ON records (outcome, ts);
CREATE TABLE IF NOT EXISTS signers (
    fingerprint TEXT PRIMARY KEY,
    chain_pem TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plan_bodies (
    sha256 TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
"""


def _ts(value: dt.datetime) -> str:
    """Fixed-width UTC text, so that text order is time order."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of :meth:`AuditStore.query`; None = any. ``since`` inclusive, ``until``
    exclusive. Results are in time order (then arrival), at most ``limit``."""

    tenant: str | None = None
    tier: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    decision_id: str | None = None
    outcome: str | None = None
    node: str | None = None
    kind: DecisionKind | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as stored: its row id (arrival order), its signer's fingerprint and the
    chain it is filed in (its node's SPIFFE ID, or a control-plane plan chain)."""

    rowid: int
    record: DecisionRecord
    signer: str
    chain: str = ""


class AuditStore:
    """The audit database at ``path`` (created with its schema if missing)."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._upgrade()
        except sqlite3.Error as exc:
            raise AuditStoreError(self._path, str(exc)) from exc

    def _upgrade(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
        if "chain" not in columns:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ALTER TABLE records ADD COLUMN chain TEXT")
            self._db.execute("UPDATE records SET chain = node")
            self._db.execute("COMMIT")
        self._db.execute("CREATE INDEX IF NOT EXISTS records_chain_seq ON records (chain, seq)")

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            self._db.close()

    def insert(
        self,
        records: Sequence[tuple[DecisionRecord, str]],
        signers: Mapping[str, str],
        *,
        received: dt.datetime | None = None,
        chain: str | None = None,
        plan_bodies: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Store (record, signer fingerprint) pairs and signer chains in one durable
        transaction; returns (accepted, duplicates). A ``decision_id`` already stored is
        a duplicate and left as it was. ``chain`` None files each record in its node's
        chain; else every record goes to the chain ``chain``. ``plan_bodies`` (SHA-256 →
        text) are stored in the same transaction, each once (the caller hashed them).

        Raises:
            AuditStoreError: the database cannot be written (nothing is stored).
        """
        stamp = _ts(received or dt.datetime.now(dt.UTC))
        rows = []
        for record, signer in records:
            found = facets(record)
            rows.append(
                (
                    str(record.decision_id),
                    record.node_spiffe_id,
                    record.seq,
                    _ts(record.timestamp),
                    record.kind,
                    record.path,
                    found.tenant,
                    found.tier,
                    found.outcome,
                    signer,
                    stamp,
                    record.model_dump_json(),
                    chain if chain is not None else record.node_spiffe_id,
                )
            )
        accepted = 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR IGNORE INTO signers (fingerprint, chain_pem) VALUES (?, ?)",
                    list(signers.items()),
                )
                self._db.executemany(
                    "INSERT OR IGNORE INTO plan_bodies (sha256, body) VALUES (?, ?)",
                    list((plan_bodies or {}).items()),
                )
                for row in rows:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO records (decision_id, node, seq, ts, kind, path,"
                        " tenant, tier, outcome, signer, received, record, chain)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    accepted += cursor.rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise AuditStoreError(self._path, str(exc)) from exc
        return accepted, len(rows) - accepted

    def query(self, query: AuditQuery) -> list[StoredRecord]:
        """Records matching every given filter (see :class:`AuditQuery`)."""
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (
            ("tenant", query.tenant),
            ("tier", query.tier),
            ("decision_id", query.decision_id),
            ("outcome", query.outcome),
            ("node", query.node),
            ("kind", query.kind),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            clauses.append("ts >= ?")
            params.append(_ts(query.since))
        if query.until is not None:
            clauses.append("ts < ?")
            params.append(_ts(query.until))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(query.limit)
        return self._select(f"{where} ORDER BY ts, rowid LIMIT ?", params)

    def tail(self, count: int) -> list[StoredRecord]:
        """The last ``count`` records to arrive, oldest first."""
        rows = self._select("ORDER BY rowid DESC LIMIT ?", [count])
        return rows[::-1]

    def after(self, rowid: int, limit: int = 1000) -> list[StoredRecord]:
        """Records that arrived after ``rowid``, in arrival order (for ``tail --follow``)."""
        return self._select("WHERE rowid > ? ORDER BY rowid LIMIT ?", [rowid, limit])

    def nodes(self) -> list[str]:
        """Every chain with records, sorted: each node's, and the control plane's."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT chain FROM records ORDER BY chain").fetchall()
        return [row[0] for row in rows]

    def chain(self, chain: str) -> Iterator[StoredRecord]:
        """The records of chain ``chain`` (a node's SPIFFE ID, or the control plane's chain
        id) in seq order (then arrival), read in pages."""
        last: tuple[int, int] = (-1, -1)
        while True:
            page = self._select(
                "WHERE chain = ? AND (seq, rowid) > (?, ?) ORDER BY seq, rowid LIMIT 1000",
                [chain, *last],
            )
            yield from page
            if len(page) < 1000:
                return
            last = (page[-1].record.seq, page[-1].rowid)

    def last_in_chain(self, chain: str) -> StoredRecord | None:
        """The record of ``chain`` with the highest seq (latest arrival on a tie), or None."""
        rows = self._select("WHERE chain = ? ORDER BY seq DESC, rowid DESC LIMIT 1", [chain])
        return rows[0] if rows else None

    def latest_by_node(self, chain: str) -> dict[str, StoredRecord]:
        """Per ``node``: its record with the highest seq in ``chain``."""
        rows = self._select(
            "WHERE chain = ? AND seq = (SELECT MAX(seq) FROM records AS r"
            " WHERE r.chain = records.chain AND r.node = records.node) ORDER BY rowid",
            [chain],
        )
        return {row.record.node_spiffe_id: row for row in rows}

    def signers(self) -> dict[str, str]:
        """Fingerprint → chain PEM of every stored signer."""
        with self._lock:
            rows = self._db.execute("SELECT fingerprint, chain_pem FROM signers").fetchall()
        return dict(rows)

    def plan_body(self, sha256: str) -> str | None:
        """The plan body stored under ``sha256``, or None."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT body FROM plan_bodies WHERE sha256 = ?", (sha256,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise AuditStoreError(self._path, str(exc)) from exc
        return None if row is None else str(row[0])

    def plan_bodies(self) -> Iterator[tuple[str, str]]:
        """Every stored plan body as (SHA-256 it is stored under, text), in key order."""
        last = ""
        while True:
            with self._lock:
                try:
                    page = self._db.execute(
                        "SELECT sha256, body FROM plan_bodies WHERE sha256 > ?"
                        " ORDER BY sha256 LIMIT 100",
                        (last,),
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise AuditStoreError(self._path, str(exc)) from exc
            yield from ((str(key), str(body)) for key, body in page)
            if len(page) < 100:
                return
            last = page[-1][0]

    def _select(self, tail: str, params: Sequence[object]) -> list[StoredRecord]:
        sql = f"SELECT rowid, record, signer, chain FROM records {tail}"  # noqa: S608 - fixed
        with self._lock:
            try:
                rows = self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise AuditStoreError(self._path, str(exc)) from exc
        return [
            StoredRecord(rowid, DecisionRecord.model_validate_json(text), signer, chain)
            for rowid, text, signer, chain in rows
        ]
