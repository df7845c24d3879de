"""The accounting without processes: prices from the catalog, totals per tenant, the
budget file ext_authz reads, and access-log entries → usage."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import struct_pb2

from tests.integration.budgets.conftest import priced_catalog
from tiermesh.agents.authz import JsonFileBudgetSource
from tiermesh.agents.usage import Prices, TenantUsage, Usage, UsageLedger, cost_micro
from tiermesh.agents.usage.server import usage_from_entry

PORTS = {"edge": 1, "gpu": 2, "cloud": 3}


def test_cost_is_per_1000_tokens_in_micro_dollars() -> None:
    assert cost_micro(1000, 0, (0.5, 2.0)) == 500_000
    assert cost_micro(120, 30, (1.0, 2.0)) == 180_000
    assert cost_micro(1, 1, (0.0001, 0.0)) == 0  # rounded to the micro-dollar


def test_prices_come_from_the_catalog() -> None:
    prices = Prices.from_catalog(priced_catalog(PORTS))
    assert prices.backends["cloud"] == (1.0, 2.0)
    assert prices.backends["edge"] == (0.0, 0.0)
    assert prices.budgets == {"acme": 0.1, "globex": 100.0}
    assert prices.cost(Usage("acme", "cloud", 120, 30)) == 180_000
    assert prices.cost(Usage("acme", "unknown-backend", 120, 30)) == 0
    assert prices.cost(Usage("acme", None, 120, 30)) == 0


def test_totals_per_tenant_and_the_budget_file_ext_authz_reads(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    path.write_text(json.dumps({"ops": {"spent_usd": 1, "limit_usd": 2}}))
    ledger = UsageLedger(path, Prices.from_catalog(priced_catalog(PORTS)))
    deltas = ledger.record(
        [
            Usage("acme", "cloud", 120, 30),
            Usage("acme", "edge", 10, 5),
            Usage("globex", "cloud", 0, 0),
        ]
    )
    assert deltas == {"acme": TenantUsage(165, 180_000), "globex": TenantUsage(0, 0)}
    assert ledger.totals("acme") == TenantUsage(165, 180_000)
    assert ledger.totals("nobody") == TenantUsage()
    assert json.loads(path.read_text()) == {
        "acme": {"spent_usd": 0.18, "limit_usd": 0.1, "month": ledger.month},
        "globex": {"spent_usd": 0.0, "limit_usd": 100.0, "month": ledger.month},
        "ops": {"spent_usd": 1, "limit_usd": 2},
    }
    assert [p.name for p in tmp_path.iterdir()] == ["budget.json"], "no temporary left"
    source = JsonFileBudgetSource(path)
    acme = asyncio.run(source.state("acme"))
    globex = asyncio.run(source.state("globex"))
    assert (acme.known, acme.exhausted, globex.exhausted) == (True, True, False)


def test_spend_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    prices = Prices.from_catalog(priced_catalog(PORTS))
    UsageLedger(path, prices).record([Usage("globex", "cloud", 120, 30)])
    again = UsageLedger(path, prices)
    assert again.totals("globex").cost_micro == 180_000
    again.record([Usage("globex", "cloud", 120, 30)])
    assert json.loads(path.read_text())["globex"]["spent_usd"] == 0.36


def test_records_from_many_threads_all_count_and_the_file_shows_the_last(
    tmp_path: Path,
) -> None:
    path = tmp_path / "budget.json"
    ledger = UsageLedger(path, Prices.from_catalog(priced_catalog(PORTS)))
    threads, each = 8, 50

    def spend() -> None:
        for _ in range(each):
            ledger.record([Usage("globex", "cloud", 120, 30)])

    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(spend) for _ in range(threads)]:
            done.result(timeout=60)
    assert ledger.totals("globex").cost_micro == threads * each * 180_000
    assert json.loads(path.read_text())["globex"]["spent_usd"] == threads * each * 0.18
    assert not list(tmp_path.glob(".budget-*"))  # no temporary file left behind


def entry(tenant: str | None, usage: dict[str, float] | None, backend: str = "cloud") -> object:
    log = accesslog_pb2.HTTPAccessLogEntry()
    if tenant is not None:
        log.request.request_headers["x-tiermesh-tenant"] = tenant
    log.common_properties.custom_tags["tiermesh.backend"] = backend
    if usage is not None:
        fields = struct_pb2.Struct()
        fields.update(usage)
        log.common_properties.metadata.filter_metadata["tiermesh.usage"].CopyFrom(fields)
    return log


def test_an_access_log_entry_gives_tenant_backend_and_tokens() -> None:
    counts = {"prompt_tokens": 12, "completion_tokens": 3}
    assert usage_from_entry(entry("acme", counts)) == Usage("acme", "cloud", 12, 3)  # type: ignore[arg-type]
    assert usage_from_entry(entry(None, counts)) is None  # type: ignore[arg-type]
    assert usage_from_entry(entry("acme", None)) is None  # type: ignore[arg-type]
    assert usage_from_entry(entry("acme", {"prompt_tokens": 1})) is None  # type: ignore[arg-type]
    assert usage_from_entry(entry("acme", counts, backend="")).backend is None  # type: ignore[arg-type, union-attr]
