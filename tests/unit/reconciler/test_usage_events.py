"""Which ``usage/`` events schedule a reconcile: a tenant's spend crossing its budget."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from rich.console import Console

from tests.unit.reconciler.conftest import MONTH, MONTH_CHECK_S, Rig
from tests.unit.reconciler.policyfiles import SMALL_CATALOG, policy_files
from tests.unit.reconciler.test_node_events import changed, quiet, started
from tiermesh.cli.status_cmd import _render_tenants
from tiermesh.controlplane.runtime.status import status_document

BUDGET_MICRO = 100_000_000
"""acme's ``monthly_budget_usd`` in the small catalog, in micro-dollars."""


def exhausted(warnings: object) -> bool:
    return any("tenant acme: monthly budget spent" in w.message for w in warnings)  # type: ignore[attr-defined]


async def test_reports_below_the_budget_schedule_nothing(rig: Rig) -> None:
    await started(rig)
    count = rig.reconciler.reconcile_count
    for _ in range(9):
        await rig.store.add_usage("acme", month=MONTH, tokens=1000, cost_micro=BUDGET_MICRO // 10)
    await rig.store.add_usage(
        "other", month=MONTH, cost_micro=10 * BUDGET_MICRO
    )  # no budget: never
    await quiet(rig)
    assert rig.reconciler.reconcile_count == count
    assert rig.reconciler.unchanged_usage_events == 10
    assert rig.reconciler.budget_crossings == 0
    assert rig.reconciler.exhausted_tenants == frozenset()


async def test_crossing_the_budget_reconciles_once_and_compiles_the_fallback(rig: Rig) -> None:
    await started(rig)
    count = rig.reconciler.reconcile_count
    await rig.store.add_usage("acme", month=MONTH, cost_micro=BUDGET_MICRO - 1)
    await quiet(rig)
    assert rig.reconciler.reconcile_count == count

    await rig.store.add_usage(
        "acme", month=MONTH, cost_micro=1
    )  # exactly the budget: exhausted (>=)
    crossed = await changed(rig, count)
    assert crossed.ok, crossed.errors
    assert exhausted(crossed.warnings)
    assert rig.reconciler.budget_crossings == 1
    assert rig.reconciler.exhausted_tenants == frozenset({"acme"})

    # Further spend past the budget changes nothing the policy decides.
    for _ in range(5):
        await rig.store.add_usage("acme", month=MONTH, cost_micro=BUDGET_MICRO)
    await quiet(rig)
    assert rig.reconciler.reconcile_count == crossed.number
    assert rig.reconciler.budget_crossings == 1


async def test_a_deleted_counter_reconciles_back(rig: Rig) -> None:
    await started(rig)
    await rig.store.add_usage("acme", month=MONTH, cost_micro=2 * BUDGET_MICRO)
    crossed = await changed(rig, rig.reconciler.reconcile_count)
    assert exhausted(crossed.warnings)

    # No Store method deletes a counter; delete it underneath.
    rig.store._apply(puts=(), deletes=[rig.store.layout.usage("acme", MONTH)])
    reset = await changed(rig, crossed.number)
    assert not exhausted(reset.warnings)
    assert rig.reconciler.exhausted_tenants == frozenset()


async def test_a_budget_spent_last_month_is_back_after_the_month_boundary(rig: Rig) -> None:
    await started(rig)
    await rig.store.add_usage("acme", month=MONTH, cost_micro=2 * BUDGET_MICRO)
    crossed = await changed(rig, rig.reconciler.reconcile_count)
    assert exhausted(crossed.warnings)

    rig.now = datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC)
    rig.clock.advance(MONTH_CHECK_S)
    january = await changed(rig, crossed.number)
    assert january.ok, january.errors
    assert not exhausted(january.warnings)
    assert rig.reconciler.exhausted_tenants == frozenset()
    assert rig.reconciler.tenant_spend == {}

    # A node's late report of December is December's: January stays unspent.
    unchanged = rig.reconciler.unchanged_usage_events
    await rig.store.add_usage("acme", month=MONTH, cost_micro=BUDGET_MICRO)
    await quiet(rig)
    assert rig.reconciler.reconcile_count == january.number
    assert rig.reconciler.unchanged_usage_events == unchanged + 1
    # December's counter is kept for audit.
    assert (await rig.store.get_usage("acme", month=MONTH)).cost_micro == 3 * BUDGET_MICRO

    await rig.store.add_usage("acme", month="2027-01", cost_micro=BUDGET_MICRO)
    spent = await changed(rig, january.number)
    assert exhausted(spent.warnings)


@pytest.mark.parametrize("budget", ["60", "160"])
async def test_a_new_budget_in_the_bundle_is_what_later_crossings_compare_with(
    rig: Rig, budget: str
) -> None:
    await started(rig)
    await rig.store.add_usage("acme", month=MONTH, cost_micro=BUDGET_MICRO // 2)  # 50 USD
    await quiet(rig)
    count = rig.reconciler.reconcile_count
    catalog = SMALL_CATALOG.replace("monthly_budget_usd: 100", f"monthly_budget_usd: {budget}")
    await rig.push(policy_files(catalog))
    pushed = await changed(rig, count)
    assert not exhausted(pushed.warnings)

    await rig.store.add_usage(
        "acme", month=MONTH, cost_micro=BUDGET_MICRO // 2 + 1
    )  # 100.000001 USD
    await quiet(rig)
    if budget == "60":
        assert rig.reconciler.reconcile_count > pushed.number
        assert exhausted(rig.reconciler.last_result.warnings)  # type: ignore[union-attr]
    else:
        assert rig.reconciler.reconcile_count == pushed.number


async def test_status_shows_each_tenants_mesh_wide_spend_against_its_budget(rig: Rig) -> None:
    await started(rig)
    await rig.store.add_usage("acme", month=MONTH, cost_micro=40_000_000)
    await rig.store.add_usage("stray", month=MONTH, cost_micro=1_500)
    async with asyncio.timeout(5):
        while rig.reconciler.unchanged_usage_events < 2:  # noqa: ASYNC110 - a counter
            await asyncio.sleep(0.001)
    document = status_document(
        trust_domain="tiermesh.test",
        addresses={},
        registrations={},
        xds=[],
        cache=rig.cache,
        reconciler=rig.reconciler,
    )
    assert document["tenants"] == [
        {"name": "acme", "spent_usd": 40.0, "budget_usd": 100.0, "exhausted": False},
        {"name": "stray", "spent_usd": 0.0015, "budget_usd": None, "exhausted": False},
    ]
    console = Console(record=True, width=120)
    _render_tenants(document["tenants"], console)
    shown = console.export_text()
    assert "acme" in shown
    assert "40.000000" in shown
    assert "within budget" in shown
    assert "not in catalog" in shown

    await rig.store.add_usage("acme", month=MONTH, cost_micro=60_000_000)
    await changed(rig, rig.reconciler.reconcile_count)
    document = status_document(
        trust_domain="tiermesh.test",
        addresses={},
        registrations={},
        xds=[],
        cache=rig.cache,
        reconciler=rig.reconciler,
    )
    assert document["tenants"][0] == {
        "name": "acme",
        "spent_usd": 100.0,
        "budget_usd": 100.0,
        "exhausted": True,
    }
