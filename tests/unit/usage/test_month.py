"""Monthly budgets: the ledger keeps spend per calendar month in UTC, and a new month
starts every tenant at zero (clock injected, no processes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from tiermesh.agents.usage import Prices, TenantUsage, Usage, UsageLedger, month_of
from tiermesh.controlplane.api import UsageAck, UsageTotal

PRICES = Prices(backends={"cloud": (1.0, 2.0)}, budgets={"acme": 0.1, "globex": 100.0})
ANSWER = Usage("acme", "cloud", 120, 30)
"""One answer: 150 tokens, 0.18 USD (more than acme's budget)."""


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def entry(path: Path, tenant: str) -> dict[str, object]:
    document: dict[str, dict[str, object]] = json.loads(path.read_text())
    return document[tenant]


def test_the_month_is_the_calendar_month_in_utc() -> None:
    assert month_of(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == "2026-12"
    assert month_of(datetime(2027, 1, 1, tzinfo=UTC)) == "2027-01"
    # 2027-01-01 00:30 in UTC+1 is still December in UTC.
    east = timezone(timedelta(hours=1))
    assert month_of(datetime(2027, 1, 1, 0, 30, tzinfo=east)) == "2026-12"
    assert month_of(datetime(2027, 1, 1)) == "2027-01"  # naive: taken as UTC


def test_a_new_month_starts_at_zero_and_the_file_shows_it(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    clock = Clock(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    ledger = UsageLedger(path, PRICES, clock=clock)
    ledger.record([ANSWER])
    assert ledger.totals("acme") == TenantUsage(150, 180_000)
    assert entry(path, "acme") == {"spent_usd": 0.18, "limit_usd": 0.1, "month": "2026-12"}

    clock.now = datetime(2027, 1, 1, tzinfo=UTC)
    assert ledger.totals("acme") == TenantUsage()
    assert ledger.month == "2027-01"
    ledger.record([Usage("globex", "cloud", 1000, 0)])
    assert entry(path, "acme") == {"spent_usd": 0.0, "limit_usd": 0.1, "month": "2027-01"}
    assert entry(path, "globex") == {"spent_usd": 1.0, "limit_usd": 100.0, "month": "2027-01"}


def test_the_first_record_of_a_month_counts_in_that_month_only(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    clock = Clock(datetime(2026, 11, 30, 12, tzinfo=UTC))
    ledger = UsageLedger(path, PRICES, clock=clock)
    ledger.record([ANSWER, ANSWER])
    clock.now = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    deltas = ledger.record([ANSWER])
    assert deltas == {"acme": TenantUsage(150, 180_000)}
    assert ledger.totals("acme") == TenantUsage(150, 180_000)
    assert entry(path, "acme")["spent_usd"] == 0.18


def test_a_restart_keeps_this_months_spend_and_drops_an_old_months(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    december = Clock(datetime(2026, 12, 15, tzinfo=UTC))
    UsageLedger(path, PRICES, clock=december).record([ANSWER])
    assert UsageLedger(path, PRICES, clock=december).totals("acme").cost_micro == 180_000
    january = Clock(datetime(2027, 1, 2, tzinfo=UTC))
    restarted = UsageLedger(path, PRICES, clock=january)
    assert restarted.totals("acme") == TenantUsage()
    restarted.record([Usage("globex", "cloud", 0, 0)])
    assert entry(path, "acme") == {"spent_usd": 0.0, "limit_usd": 0.1, "month": "2027-01"}


def test_a_file_without_months_is_taken_as_this_months(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    path.write_text(json.dumps({"acme": {"spent_usd": 0.05, "limit_usd": 0.1}}))
    ledger = UsageLedger(path, PRICES, clock=Clock(datetime(2026, 12, 15, tzinfo=UTC)))
    assert ledger.totals("acme").cost_micro == 50_000


def test_the_old_months_mesh_totals_are_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    clock = Clock(datetime(2026, 12, 31, tzinfo=UTC))
    ledger = UsageLedger(path, PRICES, epoch="e", clock=clock)
    ledger.record([ANSWER])
    report = ledger.next_report()
    assert report is not None
    totals = {"acme": UsageTotal(tokens=10_000, cost_micro=5_000_000)}
    assert ledger.acknowledge(UsageAck(epoch="e", seq=report.seq, applied=True, totals=totals))
    assert ledger.spent_micro("acme") == 5_000_000
    clock.now = datetime(2027, 1, 1, tzinfo=UTC)
    ledger.record([Usage("globex", "cloud", 0, 0)])
    assert ledger.spent_micro("acme") == 0
    assert entry(path, "acme")["spent_usd"] == 0.0


def test_reports_name_their_month_and_pending_deltas_stay_in_theirs(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    ledger = UsageLedger(tmp_path / "budget.json", PRICES, epoch="e", clock=clock)
    ledger.record([ANSWER])
    sent = ledger.next_report()
    assert sent is not None
    assert sent.month == "2026-12"
    ledger.record([ANSWER])  # still December, pending at the boundary

    clock.now = datetime(2027, 1, 1, 0, 1, tzinfo=UTC)
    ledger.record([Usage("acme", "cloud", 1000, 0)])
    december = ledger.next_report()
    january = ledger.next_report()
    assert december is not None
    assert january is not None
    assert (december.month, december.tenants["acme"].cost_micro) == ("2026-12", 180_000)
    assert (january.month, january.tenants["acme"].cost_micro) == ("2027-01", 1_000_000)
    assert ledger.next_report() is None
    # Only January's unacknowledged spend counts against January.
    assert ledger.unreported("acme") == 1_000_000
    assert [r.month for r in ledger.unacknowledged()] == ["2026-12", "2026-12", "2027-01"]


def test_an_acknowledgement_of_last_months_report_brings_no_mesh_total(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    clock = Clock(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    ledger = UsageLedger(path, PRICES, epoch="e", clock=clock)
    ledger.record([ANSWER])
    report = ledger.next_report()
    assert report is not None

    clock.now = datetime(2027, 1, 1, 0, 1, tzinfo=UTC)
    december = {"acme": UsageTotal(tokens=10_000, cost_micro=5_000_000)}
    ack = UsageAck(epoch="e", seq=report.seq, applied=True, totals=december, month="2026-12")
    assert ledger.acknowledge(ack)
    assert ledger.spent_micro("acme") == 0
    assert entry(path, "acme") == {"spent_usd": 0.0, "limit_usd": 0.1, "month": "2027-01"}

    ledger.record([Usage("acme", "cloud", 10, 0)])
    january = ledger.next_report()
    assert january is not None
    totals = {"acme": UsageTotal(tokens=30, cost_micro=30_000)}
    ack = UsageAck(epoch="e", seq=january.seq, applied=True, totals=totals, month="2027-01")
    assert ledger.acknowledge(ack)
    assert ledger.spent_micro("acme") == 30_000
