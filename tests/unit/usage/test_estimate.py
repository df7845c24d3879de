"""Answers whose usage the access log cannot read are charged an estimate (no processes):
request and answer body bytes over :data:`CHARS_PER_TOKEN`, marked as estimated in the
ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import struct_pb2

from tiermesh.agents.usage import (
    Prices,
    TenantUsage,
    Usage,
    UsageLedger,
    estimate,
    usage_from_entry,
)
from tiermesh.agents.usage.server import CHARS_PER_TOKEN

PRICES = Prices(backends={"cloud": (1.0, 2.0)}, budgets={"acme": 100.0})
POST = base_pb2.POST


def entry(
    *,
    tenant: str | None = "acme",
    usage: dict[str, float] | None = None,
    method: int = POST,
    path: str = "/v1/chat/completions",
    status: int = 200,
    upstream: bool = True,
    sent: int = 400,
    received: int = 4001,
) -> accesslog_pb2.HTTPAccessLogEntry:
    log = accesslog_pb2.HTTPAccessLogEntry()
    if tenant is not None:
        log.request.request_headers["x-tiermesh-tenant"] = tenant
    log.request.request_method = method  # type: ignore[assignment]
    log.request.path = path
    log.request.request_body_bytes = sent
    log.response.response_body_bytes = received
    log.response.response_code.value = status
    log.common_properties.custom_tags["tiermesh.backend"] = "cloud"
    if upstream:
        log.common_properties.upstream_remote_address.socket_address.address = "127.0.0.1"
    if usage is not None:
        fields = struct_pb2.Struct()
        fields.update(usage)
        log.common_properties.metadata.filter_metadata["tiermesh.usage"].CopyFrom(fields)
    return log


def test_the_estimate_is_bytes_over_the_rate_rounded_up() -> None:
    assert CHARS_PER_TOKEN == 4
    assert estimate(0, 0) == (0, 0)
    assert estimate(400, 4001) == (100, 1001)
    assert estimate(1, 3) == (1, 1)
    assert estimate(-5, 8) == (0, 2)


def test_reported_usage_is_charged_as_reported() -> None:
    counts = {"prompt_tokens": 12, "completion_tokens": 3}
    assert usage_from_entry(entry(usage=counts)) == Usage("acme", "cloud", 12, 3)


@pytest.mark.parametrize(
    "usage",
    [None, {}, {"prompt_tokens": 12}, {"include_usage_added": True}],
    ids=["no metadata", "empty", "half", "asked, none came"],
)
def test_an_answered_completion_without_usage_is_charged_an_estimate(
    usage: dict[str, float] | None,
) -> None:
    assert usage_from_entry(entry(usage=usage)) == Usage("acme", "cloud", 100, 1001, estimated=True)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions?x=1"])
def test_completion_paths_are_estimated(path: str) -> None:
    found = usage_from_entry(entry(path=path))
    assert found is not None
    assert found.estimated


@pytest.mark.parametrize(
    "changes",
    [
        {"tenant": None},
        {"upstream": False},  # a local reply: ext_authz's denial, no route
        {"status": 403},
        {"status": 503},
        {"status": 0},  # the client left before the answer's headers
        {"method": base_pb2.GET},
        {"path": "/v1/models"},
        {"path": "/v1/completions/x"},
    ],
    ids=str,
)
def test_no_estimate_where_no_backend_answered_a_completion(changes: dict[str, object]) -> None:
    assert usage_from_entry(entry(**changes)) is None  # type: ignore[arg-type]


def test_the_ledger_keeps_which_charges_are_estimates(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "budget.json", PRICES)
    deltas = ledger.record(
        [Usage("acme", "cloud", 100, 50), Usage("acme", "cloud", 100, 1000, estimated=True)]
    )
    # 100 * 1.0 / 1000 + 50 * 2.0 / 1000 USD, then 100 * 1.0 / 1000 + 1000 * 2.0 / 1000 USD
    expected = TenantUsage(1250, 200_000 + 2_100_000, 1100, 2_100_000)
    assert deltas == {"acme": expected}
    assert ledger.totals("acme") == expected
    report = ledger.next_report()
    assert report is not None
    assert (report.tenants["acme"].tokens, report.tenants["acme"].cost_micro) == (1250, 2_300_000)
