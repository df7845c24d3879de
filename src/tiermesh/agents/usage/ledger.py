"""Per-tenant token and spend totals, and the budget file ext_authz reads.

:class:`Prices` maps a backend to its catalog price and a tenant to its monthly budget.
:class:`UsageLedger` adds each answered request's tokens and cost to its tenant and
rewrites the budget file (``{"<tenant>": {"spent_usd": x, "limit_usd": y, "month": m},
…}``, the format :class:`~tiermesh.agents.authz.JsonFileBudgetSource` reads, which ignores
``month``) atomically: a temporary file in the same directory, then ``os.replace``, so a
reader sees the old or the new file, never a partial one. ext_authz therefore marks a
tenant exhausted from the first request checked after the file shows the answer that
brought ``spent_usd`` to ``limit_usd`` or above (the totals change a moment before the
file: :meth:`UsageLedger.record` writes after it counts).

Spend is kept in integer micro-dollars (no float drift over many small requests). On
construction the ledger takes the ``spent_usd`` already in the file (this month's, see
below), so totals survive an agent restart; entries of tenants the catalog does not know
are kept as they are.

Estimates: a :class:`Usage` with ``estimated`` set (the access log could not read the
answer's ``usage``; see :mod:`tiermesh.agents.usage.server`) is charged like any other,
and :class:`TenantUsage` keeps how much of the tenant's total was estimated
(``estimated_tokens``, ``estimated_cost_micro``: parts of ``tokens`` and ``cost_micro``,
not added to them). Reports to the control plane carry the sums only.

Monthly budgets reset at the month boundary: spend is kept per calendar month in UTC, by
the ``clock`` the ledger is given (:func:`utc_now` by default). The first call that finds a
new month (a record, an acknowledgement, a price change, a read of totals) starts every
tenant's local total at zero and forgets the old month's mesh totals; the next write shows
zero spend, so an exhausted tenant gets its routes back from the first request checked
after it. Each catalog tenant's file entry names its month (``"month": "2026-12"``); at
start, an entry of another month is not taken (the new month starts at zero), an entry
without one (an operator's file, or one written before this field) is taken as this
month's. Every report names the month its deltas were accounted in
(``UsageReport.month``): deltas still pending at the boundary are sealed into reports of
the old month (sent before the new month's), and reports unacknowledged then are re-sent
as they are, so the control plane charges them to the old month's counters. The control
plane keeps its counters per month too and says which month an acknowledgement's totals
are of (``UsageAck.month``); the ledger takes mesh totals only of its current month, so
an acknowledgement of last month's report never brings last month's mesh spend into the
file (one without a month, from an older control plane, is taken as the current one's).
Only reports of the current month count in U.

Reporting to the control plane: every delta :meth:`UsageLedger.record` accounts also goes
to an outbox. :meth:`UsageLedger.next_report` seals what is pending into a
:class:`~tiermesh.controlplane.api.UsageReport` (the agent's registry session sends one
every load interval when there is something to send), which the ledger keeps until the
control plane's :class:`~tiermesh.controlplane.api.UsageAck` for it arrives
(:meth:`UsageLedger.acknowledge`). A session that breaks first re-sends every
unacknowledged report unchanged on the next one (:meth:`UsageLedger.unacknowledged`), so
delivery is at least once; reports carry a random per-ledger ``epoch`` and a ``seq`` so the
control plane can recognise a re-send. Deltas still pending when the agent stops are not
reported (they are in this node's file total, see below). At most
:data:`MAX_UNACKNOWLEDGED` reports wait for an answer; while that many do, deltas keep
collecting in the pending set (at most one entry per tenant).

Answer counts: the ledger also holds an :class:`~tiermesh.agents.usage.answers.AnswerTally`
(``answers``), which the usage server feeds with every access-log entry's
:class:`~tiermesh.agents.usage.answers.Answer`. ``next_report(answers=True)`` (for a
control plane that takes them) moves its counts into the sealed report, which then
carries them through re-sends like its deltas; it seals a report for answers alone when no
tenant has a delta.

Mesh-wide spend in the budget file: each acknowledgement carries the mesh-wide totals of
the reported tenants (every node's acknowledged reports added up), remembered as the
tenant's *mesh total* M. The file then says, for each catalog tenant,
``spent_usd = max(L, M + U)`` where L is this node's own total this month (what it
accounted since the file started, the file's value at start included) and U what this node
accounted but the control plane has not acknowledged yet (pending and unacknowledged
reports). Why this is sound: M counts every acknowledged report, this node's included, so
M + U covers all of this node's spend and all of the others' up to the moment M was read;
a report applied whose acknowledgement is still on the way is in both M and U (an
over-count until the acknowledgement lands: the fallback comes early, never late). Other
nodes' spend since then arrives with the next acknowledgement, about one report interval
later. Taking the max with L keeps the file at least at this node's own spend when the
control plane has never answered (an unreachable control plane degrades to per-node
budgets, as before), and a mesh total that drops (a counter reset) is followed as it is.
Tenants never acknowledged use L alone. A node hears a tenant's mesh total only in answers
to its own reports of that tenant, so its file lags for a tenant it has not served lately;
the routes do not, because the control plane re-plans every node when a tenant's combined
spend crosses its budget.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from tiermesh.agents.usage.answers import AnswerTally
from tiermesh.agents.usage.errors import LedgerWriteFailed
from tiermesh.controlplane.api import (
    MAX_USAGE_AMOUNT,
    MAX_USAGE_TENANTS,
    Catalog,
    UsageAck,
    UsageDelta,
    UsageReport,
)

__all__ = [
    "MAX_UNACKNOWLEDGED",
    "Prices",
    "TenantUsage",
    "Usage",
    "UsageLedger",
    "cost_micro",
    "month_of",
    "utc_now",
]

log = logging.getLogger("tiermesh.agent.usage")

MAX_UNACKNOWLEDGED: Final = 32
"""Most reports that wait for the control plane's answer at once."""

_REPORTABLE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
"""Tenant names a report may carry (the catalog's ``Name`` rule); others are never sent."""


def utc_now() -> datetime:
    """The ledger's default clock."""
    return datetime.now(UTC)


def month_of(moment: datetime) -> str:
    """The calendar month in UTC of ``moment`` (naive: taken as UTC), as ``YYYY-MM``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


@dataclass(frozen=True, slots=True)
class Usage:
    """One answered request, as the access log reports it."""

    tenant: str
    backend: str | None
    """The answering backend (endpoint metadata); None when Envoy did not name one."""
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    """The counts are an estimate: the answer's ``usage`` could not be read."""


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """A tenant's totals this month since the ledger (or its file) started."""

    tokens: int = 0
    cost_micro: int = 0
    estimated_tokens: int = 0
    """The part of ``tokens`` charged from estimates."""
    estimated_cost_micro: int = 0
    """The part of ``cost_micro`` charged from estimates."""

    @property
    def spent_usd(self) -> float:
        return self.cost_micro / 1_000_000


def cost_micro(prompt_tokens: int, completion_tokens: int, price: tuple[float, float]) -> int:
    """Micro-dollars for the tokens at ``price`` = (input, output) USD per 1000 tokens,
    rounded to the nearest micro-dollar."""
    per_input, per_output = price
    return round(prompt_tokens * per_input * 1000 + completion_tokens * per_output * 1000)


@dataclass(frozen=True, slots=True)
class Prices:
    """Backend prices (USD per 1000 input/output tokens) and tenants' monthly budgets."""

    backends: dict[str, tuple[float, float]]
    budgets: dict[str, float]

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> Prices:
        return cls(
            backends={
                b.name: (float(b.cost_per_1k_tokens.input), float(b.cost_per_1k_tokens.output))
                for b in catalog.backends
            },
            budgets={t.name: float(t.monthly_budget_usd) for t in catalog.tenants},
        )

    def cost(self, usage: Usage) -> int:
        """Micro-dollars of ``usage``; 0 for a backend the catalog does not price."""
        price = self.backends.get(usage.backend or "")
        if price is None:
            return 0
        return cost_micro(usage.prompt_tokens, usage.completion_tokens, price)


def _add(
    table: dict[str, TenantUsage], tenant: str, tokens: int, cost: int, estimated: bool = False
) -> None:
    before = table.get(tenant, TenantUsage())
    table[tenant] = TenantUsage(
        before.tokens + tokens,
        before.cost_micro + cost,
        before.estimated_tokens + (tokens if estimated else 0),
        before.estimated_cost_micro + (cost if estimated else 0),
    )


class UsageLedger:
    """Totals per tenant, the outbox of reports to the control plane and the budget file
    (see the module doc).

    Thread-safe: every method may be called from any thread. :meth:`record` and
    :meth:`acknowledge` write the budget file synchronously (an fsync): on an event loop,
    call them through ``asyncio.to_thread`` (the usage server and the registry session do),
    so the fsync never stalls the ext_authz checks served on the same loop. Writes are
    serialized and the newest state wins: a write that finds a newer one already on disk
    is skipped. ``epoch`` names this ledger's report sequence (default: random); ``clock``
    tells the month (module doc) and is called under the ledger's lock: it must be fast.
    """

    def __init__(
        self,
        budget_file: str | Path,
        prices: Prices,
        *,
        epoch: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._path = Path(budget_file)
        self._prices = prices
        self._clock = clock
        self._month = month_of(clock())
        self._totals: dict[str, TenantUsage] = {}
        self._foreign: dict[str, object] = {}
        self._pending: dict[str, TenantUsage] = {}
        self._earlier: dict[str, dict[str, TenantUsage]] = {}
        """Deltas of months before ``_month`` still to report: month -> tenant -> delta."""
        self._sent: dict[int, UsageReport] = {}
        self._mesh: dict[str, int] = {}
        self._epoch = epoch if epoch is not None else secrets.token_hex(8)
        self._seq = 0
        self._lock = threading.Lock()
        """Guards every table above."""
        self.answers = AnswerTally()
        """Answers counted since the last report that carried them (module doc)."""
        self._write_lock = threading.Lock()
        """Serializes file writes; taken without ``_lock`` held."""
        self._generation = 0
        """Bumped under ``_lock`` with every change the file shows."""
        self._written = 0
        """The generation on disk (under ``_write_lock``)."""
        self._load()

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def path(self) -> Path:
        return self._path

    @property
    def month(self) -> str:
        """The month (``YYYY-MM``, UTC) the totals are of, as of the last call."""
        with self._lock:
            return self._month

    def totals(self, tenant: str) -> TenantUsage:
        """The tenant's totals this month (zero for a tenant never seen)."""
        with self._lock:
            self._roll()
            return self._totals.get(tenant, TenantUsage())

    def _roll(self) -> bool:
        """Start a new month when the clock shows one (under ``_lock``); True if it did."""
        month = month_of(self._clock())
        if month == self._month:
            return False
        log.info("month %s starts: tenants' spend starts at zero (was %s)", month, self._month)
        if self._pending:
            earlier = self._earlier.setdefault(self._month, {})
            for tenant, delta in self._pending.items():
                _add(earlier, tenant, delta.tokens, delta.cost_micro)
            self._pending = {}
        self._month = month
        self._totals.clear()
        self._mesh.clear()
        self._generation += 1
        return True

    def record(self, entries: Iterable[Usage]) -> dict[str, TenantUsage]:
        """Add ``entries`` and rewrite the budget file once. Returns the deltas per tenant
        (what a control-plane report would carry).

        Raises:
            LedgerWriteFailed: the file could not be written; the totals include the
                entries anyway and the next successful write carries them.
        """
        deltas: dict[str, TenantUsage] = {}
        with self._lock:
            rolled = self._roll()
            for usage in entries:
                tokens = usage.prompt_tokens + usage.completion_tokens
                cost = self._prices.cost(usage)
                for table in (self._totals, deltas):
                    _add(table, usage.tenant, tokens, cost, usage.estimated)
            for tenant, delta in deltas.items():
                if _REPORTABLE.match(tenant):
                    _add(self._pending, tenant, delta.tokens, delta.cost_micro)
                else:
                    log.warning("tenant %r is not a catalog name; its usage is not reported",
                                tenant)  # fmt: skip
            if deltas:
                self._generation += 1
        if deltas or rolled:
            self._write()
        return deltas

    def replace_prices(self, prices: Prices) -> None:
        """Price later usage with ``prices`` (a new catalog) and rewrite the budget file with
        its budgets. Totals, pending and unacknowledged reports and mesh totals are kept;
        a tenant new to the catalog whose entry the file held takes its ``spent_usd``, as
        at start; a tenant the catalog dropped leaves the file (its totals are kept, and
        come back if it returns).

        Raises:
            LedgerWriteFailed: the file could not be written (the new prices apply anyway).
        """
        with self._lock:
            self._roll()
            for name in [n for n in self._foreign if n in prices.budgets]:
                entry = self._foreign.pop(name)
                spent = self._spent_entry(entry)
                if name not in self._totals and spent is not None:
                    self._totals[name] = TenantUsage(0, spent)
            self._prices = prices
            self._generation += 1
        self._write()

    # -- reporting ------------------------------------------------------------------------

    def next_report(self, *, answers: bool = False) -> UsageReport | None:
        """Seal the pending deltas (at most :data:`MAX_USAGE_TENANTS` tenants; the rest stay
        pending) into a new report, kept until acknowledged. None when nothing is pending or
        :data:`MAX_UNACKNOWLEDGED` reports wait already. A report holds one month's deltas
        and names it; deltas of a month that ended go first. ``answers``: also move the
        answer counts into it (module doc)."""
        with self._lock:
            return self._seal(answers)

    def _seal(self, with_answers: bool) -> UsageReport | None:
        self._roll()
        month, pending = min(self._earlier.items(), default=(self._month, self._pending))
        if len(self._sent) >= MAX_UNACKNOWLEDGED:
            return None
        if not pending and not (with_answers and self.answers.pending()):
            return None
        tenants: dict[str, UsageDelta] = {}
        for tenant in sorted(pending)[:MAX_USAGE_TENANTS]:
            delta = pending[tenant]
            tokens = min(delta.tokens, MAX_USAGE_AMOUNT)
            cost = min(delta.cost_micro, MAX_USAGE_AMOUNT)
            tenants[tenant] = UsageDelta(tokens=tokens, cost_micro=cost)
            rest = TenantUsage(delta.tokens - tokens, delta.cost_micro - cost)
            if rest == TenantUsage():
                del pending[tenant]
            else:
                pending[tenant] = rest
        if not pending:
            self._earlier.pop(month, None)
        self._seq += 1
        counts = self.answers.take() if with_answers else None
        report = UsageReport(
            epoch=self._epoch, seq=self._seq, tenants=tenants, month=month, answers=counts
        )
        self._sent[report.seq] = report
        return report

    def unacknowledged(self) -> tuple[UsageReport, ...]:
        """Reports sent but not acknowledged, oldest first: re-send them on a new session."""
        with self._lock:
            return tuple(self._sent.values())

    def acknowledge(self, ack: UsageAck) -> bool:
        """Forget the report ``ack`` answers, take its mesh totals and rewrite the budget
        file. False (nothing changes) for an answer to no report of this ledger.

        Raises:
            LedgerWriteFailed: the file could not be written (the totals are kept).
        """
        with self._lock:
            if ack.epoch != self._epoch or self._sent.pop(ack.seq, None) is None:
                return False
            self._roll()
            if ack.month is None or ack.month == self._month:
                for tenant, total in ack.totals.items():
                    self._mesh[tenant] = total.cost_micro
            self._generation += 1
        self._write()
        return True

    def unreported(self, tenant: str) -> int:
        """Micro-dollars of ``tenant`` accounted here and not yet acknowledged (U)."""
        with self._lock:
            return self._unreported(tenant)

    def _unreported(self, tenant: str) -> int:
        pending = self._pending.get(tenant, TenantUsage()).cost_micro
        sent = sum(
            r.tenants[tenant].cost_micro
            for r in self._sent.values()
            if tenant in r.tenants and r.month in (None, self._month)
        )
        return pending + sent

    def budgets(self) -> dict[str, tuple[int, float]]:
        """Each catalog tenant's spend as the budget file says it (micro-dollars, see
        :meth:`spent_micro`) and its monthly budget in USD, this month."""
        with self._lock:
            self._roll()
            return {t: (self._spent_micro(t), b) for t, b in self._prices.budgets.items()}

    def spent_micro(self, tenant: str) -> int:
        """What the budget file says the tenant spent, in micro-dollars:
        ``max(L, M + U)`` (module doc)."""
        with self._lock:
            return self._spent_micro(tenant)

    def _spent_micro(self, tenant: str) -> int:
        local = self._totals.get(tenant, TenantUsage()).cost_micro
        mesh = self._mesh.get(tenant)
        if mesh is None:
            return local
        return max(local, mesh + self._unreported(tenant))

    def _load(self) -> None:
        try:
            document = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            return  # rewritten whole on the first record
        if not isinstance(document, dict):
            return
        for name, entry in document.items():
            spent = self._spent_entry(entry)
            if name in self._prices.budgets and spent is not None:
                self._totals[name] = TenantUsage(0, spent)
            elif name not in self._prices.budgets:
                self._foreign[name] = entry

    def _spent_entry(self, entry: object) -> int | None:
        """Micro-dollars a file entry says were spent this month; None for an entry without
        a number or of another month (module doc)."""
        if not isinstance(entry, dict):
            return None
        spent, month = entry.get("spent_usd"), entry.get("month", self._month)
        if not isinstance(spent, int | float) or isinstance(spent, bool) or month != self._month:
            return None
        return round(float(spent) * 1_000_000)

    def _document(self) -> dict[str, object]:
        document: dict[str, object] = dict(self._foreign)
        for name, limit in sorted(self._prices.budgets.items()):
            spent = self._spent_micro(name) / 1_000_000
            document[name] = {"spent_usd": spent, "limit_usd": limit, "month": self._month}
        return document

    def _write(self) -> None:
        """Write the newest state, unless a write of it (or of a newer one) happened."""
        with self._write_lock:
            with self._lock:
                generation = self._generation
                data = json.dumps(self._document(), sort_keys=True).encode()
            if generation <= self._written:
                return
            self._store(data)
            self._written = generation

    def _store(self, data: bytes) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".budget-", dir=self._path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self._path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise LedgerWriteFailed(str(self._path), str(exc)) from exc
