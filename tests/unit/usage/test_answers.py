"""Answer classification from access-log entries, and the tally's hand-over to reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2

from tiermesh.agents.usage.answers import Answer, AnswerTally, classify
from tiermesh.agents.usage.ledger import Prices, UsageLedger
from tiermesh.controlplane.api import AnswerCounts


def entry(
    status: int,
    *,
    tier_header: str = "",
    tier_tag: str = "",
    backend: str = "",
    cluster: str = "",
    route: str = "acme/reasoning/public",
    attempts: int = 1,
    steps: str = "",
    upstream: bool = True,
    budget: str = "",
    first: str = "",
) -> accesslog_pb2.HTTPAccessLogEntry:
    logged = accesslog_pb2.HTTPAccessLogEntry()
    logged.request.request_method = base_pb2.POST
    logged.request.path = "/v1/chat/completions"
    logged.response.response_code.value = status
    if budget:
        logged.request.request_headers["x-tiermesh-budget"] = budget
    if tier_header:
        logged.response.response_headers["x-tiermesh-tier"] = tier_header
    if steps:
        logged.response.response_headers["x-tiermesh-cascade-steps"] = steps
    common = logged.common_properties
    common.route_name = route
    common.upstream_cluster = cluster
    common.upstream_request_attempt_count = attempts
    if tier_tag:
        common.custom_tags["tiermesh.tier"] = tier_tag
    if backend:
        common.custom_tags["tiermesh.backend"] = backend
    if first:
        common.custom_tags["tiermesh.first"] = first
    if upstream:
        common.upstream_remote_address.CopyFrom(
            address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=9)
            )
        )
    return logged


CHAIN = "chain|frontier-eu|private-llama|edge-llama"


@pytest.mark.parametrize(
    ("logged", "expected"),
    [
        (
            entry(200, tier_header="cloud", tier_tag="cloud", backend="frontier-eu", cluster=CHAIN),
            Answer(200, "cloud"),
        ),
        (
            entry(
                200,
                tier_header="private",
                tier_tag="private",
                backend="private-llama",
                cluster=CHAIN,
                attempts=2,
            ),
            Answer(200, "private", True, "retry"),
        ),
        (
            entry(200, tier_header="private", backend="private-llama", cluster=CHAIN),
            Answer(200, "private", True, "unavailable"),
        ),
        (
            entry(200, tier_header="local", backend="edge-llama", cluster="edge-llama"),
            Answer(200, "local"),
        ),
        (
            entry(
                200,
                tier_header="local",
                backend="edge-llama",
                cluster="chain|edge-llama|private-llama",
                route="initech/chat/public/budget",
            ),
            Answer(200, "local", True, "budget"),
        ),
        (
            entry(
                200,
                tier_header="private",
                backend="private-llama",
                cluster="private-llama",
                first="frontier-eu",
            ),
            Answer(200, "private", True, "unavailable"),
        ),
        (
            entry(
                200,
                tier_header="cloud",
                backend="frontier-eu",
                cluster="frontier-eu",
                first="frontier-eu",
                attempts=2,
            ),
            Answer(200, "cloud"),
        ),
        (
            entry(
                200,
                tier_header="local",
                backend="edge-llama",
                cluster="chain|edge-llama",
                budget="exhausted",
            ),
            Answer(200, "local", True, "budget"),
        ),
        (
            entry(
                200,
                tier_header="private",
                steps="2",
                cluster="tiermesh|cascade",
                route="acme/cascade/public",
            ),
            Answer(200, "private", True, "cascade"),
        ),
        (
            entry(
                200,
                tier_header="local",
                steps="1",
                cluster="tiermesh|cascade",
                route="acme/cascade/public",
            ),
            Answer(200, "local"),
        ),
        (
            entry(503, tier_header="cloud", tier_tag="cloud", backend="frontier-eu", cluster=CHAIN),
            Answer(503, "cloud"),
        ),
        (entry(401, upstream=False, route=""), Answer(401, None)),
        (entry(503, upstream=False, cluster="chain|edge-llama"), Answer(503, None)),
        (entry(200, tier_header="local", route="acme/cascade/public/cascade/0"), None),
        (entry(0, upstream=False), None),
        (entry(200, tier_header=", local"), Answer(200, "local")),
    ],
    ids=[
        "cloud-first",
        "retry",
        "unavailable",
        "single",
        "budget",
        "member-cluster-first-tag",
        "first-retried-on-itself",
        "budget-replanned",
        "cascade-escalated",
        "cascade-first",
        "5xx-from-tier",
        "denied",
        "all-down",
        "cascade-step",
        "client-left",
        "odd-header",
    ],
)
def test_classify(logged: accesslog_pb2.HTTPAccessLogEntry, expected: Answer | None) -> None:
    assert classify(logged) == expected


def test_the_tally_adds_up_and_starts_again_after_take() -> None:
    tally = AnswerTally()
    assert tally.take() is None
    tally.add([Answer(200, "cloud"), Answer(200, "local", True, "retry"),
               Answer(200, "local", True, None), Answer(401, None), Answer(401, None)])  # fmt: skip
    assert tally.pending()
    assert tally.take() == AnswerCounts(
        by_tier={"cloud": 1, "local": 2},
        first_choice=1,
        fallback=2,
        fallback_reasons={"retry": 1},
        refused={"401": 2},
    )
    assert tally.take() is None
    assert not tally.pending()


def test_refusal_statuses_are_bounded() -> None:
    tally = AnswerTally()
    tally.add([Answer(400 + i % 100, None) for i in range(200)])
    counts = tally.take()
    assert counts is not None
    assert len(counts.refused) <= 64
    assert sum(counts.refused.values()) == 200


def test_reports_carry_answers_only_when_asked(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "budget.json", Prices({}, {}), epoch="e")
    ledger.answers.add([Answer(200, "local"), Answer(429, None)])
    assert ledger.next_report() is None  # nothing but answers, and the plane takes none
    report = ledger.next_report(answers=True)
    assert report is not None
    assert report.tenants == {}
    assert report.answers == AnswerCounts(by_tier={"local": 1}, first_choice=1,
                                          refused={"429": 1})  # fmt: skip
    assert ledger.next_report(answers=True) is None
    assert ledger.unacknowledged() == (report,)  # re-sent unchanged, answers included
