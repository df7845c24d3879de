"""What the dashboard reads from the audit database, off the event loop.

:class:`AuditWatcher` keeps an :class:`~tiermesh.controlplane.dashboard.view.AuditSummary`:
the newest records (read on every :meth:`AuditWatcher.summary`) and the outcome of a full
``verify_store`` run (the same check as ``tiermesh audit verify``), re-run when new records
arrived and at least ``verify_every_s`` after the last run, so a busy audit trail costs one
verification per interval, not one per page poll. A full run re-checks every signature
(~0.1 ms a record), so the interval also grows to ten times the last run's duration: the
check takes at most about a tenth of one core however large the database grows, and its
result is as old as that interval (``verified_at`` says when). Reads run in a worker thread
(:class:`~tiermesh.controlplane.audit.AuditStore` is thread-safe). Use from one event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable

from tiermesh.controlplane.audit import AuditError, AuditStore, verify_store
from tiermesh.controlplane.dashboard.view import AuditSummary

__all__ = ["AuditWatcher"]

log = logging.getLogger("tiermesh.controlplane.dashboard")


class AuditWatcher:
    """Summaries of ``store`` (module doc). ``recent`` records are read per summary."""

    def __init__(
        self,
        store: AuditStore,
        *,
        recent: int = 200,
        verify_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._recent = recent
        self._every = verify_every_s
        self._clock = clock
        self._verified_rowid = -1
        self._verified_mono = float("-inf")
        self._interval = verify_every_s
        self._last = AuditSummary()
        self._lock = asyncio.Lock()

    def _read(self, verify: bool, last_rowid: int) -> AuditSummary:
        records = self._store.tail(self._recent)
        total = records[-1].rowid if records else 0
        summary = self._last
        if verify and total != last_rowid:
            outcome = verify_store(self._store)
            problems = [str(p) for p in outcome.problems]
            problems += [f"chain {c}: a stored record is unreadable" for c in outcome.unreadable]
            problems += list(outcome.bodies)
            return AuditSummary(
                records, total, outcome.ok, outcome.checked, outcome.chains, tuple(problems),
                dt.datetime.now(dt.UTC),
            )  # fmt: skip
        return AuditSummary(
            records, total, summary.ok, summary.checked, summary.chains, summary.problems,
            summary.verified_at,
        )  # fmt: skip

    async def summary(self) -> AuditSummary:
        """The newest records and the latest verification. A failing database is logged and
        the previous summary returned."""
        async with self._lock:
            now = self._clock()
            verify = now - self._verified_mono >= self._interval
            started = time.monotonic()
            try:
                summary = await asyncio.to_thread(self._read, verify, self._verified_rowid)
            except AuditError as exc:
                log.warning("dashboard cannot read the audit database: %s", exc)
                return self._last
            if verify and summary.total != self._verified_rowid:
                self._verified_rowid = summary.total
                self._verified_mono = now
                self._interval = max(self._every, 10 * (time.monotonic() - started))
            self._last = summary
            return summary
