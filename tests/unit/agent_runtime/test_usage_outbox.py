"""The ledger's reports to the control plane: deltas, acknowledgements, re-sends, and the
budget file's merge of this node's spend with the mesh-wide totals."""

from __future__ import annotations

import json
from pathlib import Path

from tiermesh.agents.usage import Prices, Usage, UsageLedger
from tiermesh.agents.usage.ledger import MAX_UNACKNOWLEDGED
from tiermesh.controlplane.api import MAX_USAGE_TENANTS, UsageAck, UsageReport, UsageTotal

PRICES = Prices(backends={"cloud": (1.0, 2.0)}, budgets={"acme": 1.0, "globex": 100.0})
"""A cloud answer of 120 + 30 tokens costs 180_000 micro-dollars."""


def ledger(tmp_path: Path) -> UsageLedger:
    return UsageLedger(tmp_path / "budget.json", PRICES, epoch="e1")


def answer(tenant: str = "acme") -> Usage:
    return Usage(tenant, "cloud", 120, 30)


def ack(report: UsageReport, **totals: int) -> UsageAck:
    return UsageAck(
        epoch=report.epoch,
        seq=report.seq,
        applied=True,
        totals={t: UsageTotal(tokens=0, cost_micro=c) for t, c in totals.items()},
    )


def spent(tmp_path: Path, tenant: str = "acme") -> float:
    return float(json.loads((tmp_path / "budget.json").read_text())[tenant]["spent_usd"])


def test_deltas_are_sealed_into_numbered_reports(tmp_path: Path) -> None:
    book = ledger(tmp_path)
    assert book.next_report() is None
    book.record([answer(), answer(), answer("globex")])
    first = book.next_report()
    assert first is not None
    assert (first.epoch, first.seq) == ("e1", 1)
    assert {t: (d.tokens, d.cost_micro) for t, d in first.tenants.items()} == {
        "acme": (300, 360_000),
        "globex": (150, 180_000),
    }
    assert book.next_report() is None  # nothing new
    book.record([answer()])
    second = book.next_report()
    assert second is not None
    assert second.seq == 2
    assert book.unacknowledged() == (first, second)

    assert book.acknowledge(ack(first, acme=360_000, globex=180_000))
    assert not book.acknowledge(ack(first))  # answered already
    assert not book.acknowledge(ack(second).model_copy(update={"epoch": "other"}))
    assert book.unacknowledged() == (second,)


def test_a_random_epoch_per_ledger(tmp_path: Path) -> None:
    one = UsageLedger(tmp_path / "a.json", PRICES)
    two = UsageLedger(tmp_path / "b.json", PRICES)
    assert one.epoch != two.epoch
    UsageReport(epoch=one.epoch, seq=1, tenants={"acme": {"tokens": 1}})  # type: ignore[dict-item]


def test_tenants_that_are_no_catalog_name_are_counted_but_never_reported(tmp_path: Path) -> None:
    book = ledger(tmp_path)
    book.record([answer("Not A Name"), answer("a/b")])
    assert book.totals("Not A Name").cost_micro == 180_000
    assert book.next_report() is None


def test_a_report_carries_at_most_the_contracts_tenants(tmp_path: Path) -> None:
    book = ledger(tmp_path)
    book.record([answer(f"t{i:04d}") for i in range(MAX_USAGE_TENANTS + 10)])
    first, second = book.next_report(), book.next_report()
    assert first is not None
    assert second is not None
    assert len(first.tenants) == MAX_USAGE_TENANTS
    assert len(second.tenants) == 10
    assert set(first.tenants).isdisjoint(second.tenants)


def test_unanswered_reports_are_bounded_and_deltas_wait_meanwhile(tmp_path: Path) -> None:
    book = ledger(tmp_path)
    for _ in range(MAX_UNACKNOWLEDGED):
        book.record([answer()])
        assert book.next_report() is not None
    book.record([answer(), answer()])
    assert book.next_report() is None
    book.acknowledge(ack(book.unacknowledged()[0]))
    waiting = book.next_report()
    assert waiting is not None
    assert waiting.tenants["acme"].cost_micro == 360_000


def test_the_budget_file_takes_the_mesh_total_plus_what_is_not_acknowledged(
    tmp_path: Path,
) -> None:
    book = ledger(tmp_path)
    book.record([answer()])  # L = 0.18
    assert spent(tmp_path) == 0.18
    report = book.next_report()
    assert report is not None
    book.record([answer()])  # L = 0.36, U = 0.36 (0.18 sent, 0.18 pending)

    # The control plane added 0.18 to other nodes' 0.5: M = 0.68.
    book.acknowledge(ack(report, acme=680_000))
    assert book.unreported("acme") == 180_000
    assert book.spent_micro("acme") == 860_000  # M + U
    assert spent(tmp_path) == 0.86
    assert spent(tmp_path, "globex") == 0.0  # never acknowledged: L alone

    # A mesh total below this node's own spend (a counter reset): L wins.
    book.record([answer()] * 4)  # L = 1.08
    second = book.next_report()
    assert second is not None
    book.acknowledge(ack(second, acme=10))
    assert book.spent_micro("acme") == 1_080_000
    assert spent(tmp_path) == 1.08


def test_the_file_total_survives_a_restart_and_is_not_reported_again(tmp_path: Path) -> None:
    book = ledger(tmp_path)
    book.record([answer()])
    report = book.next_report()
    assert report is not None
    book.acknowledge(ack(report, acme=900_000))
    assert spent(tmp_path) == 0.9

    again = UsageLedger(tmp_path / "budget.json", PRICES)
    assert again.totals("acme").cost_micro == 900_000
    assert again.next_report() is None
    assert spent(tmp_path) == 0.9
