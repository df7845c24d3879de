"""The usage report in the registry session contract: what it accepts and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tiermesh.controlplane.api import (
    MAX_USAGE_AMOUNT,
    MAX_USAGE_TENANTS,
    AnswerCounts,
    NodeLoad,
    SessionMessage,
    SessionReply,
    UsageAck,
    UsageReport,
    UsageTotal,
)


def report(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "epoch": "3f2a9c",
        "seq": 1,
        "tenants": {"acme": {"tokens": 120, "cost_micro": 45}},
    }
    document.update(changes)
    return document


def test_a_report_round_trips_inside_a_session_message() -> None:
    message = SessionMessage.model_validate({"usage": report()})
    assert message.usage is not None
    assert message.usage.tenants["acme"].cost_micro == 45
    assert SessionMessage.model_validate_json(message.model_dump_json()) == message


@pytest.mark.parametrize(
    "changes",
    [
        {"tenants": {}},
        {"tenants": {"": {"tokens": 1}}},
        {"tenants": {"Acme": {"tokens": 1}}},
        {"tenants": {"a/b": {"tokens": 1}}},
        {"tenants": {"acme": {"tokens": -1}}},
        {"tenants": {"acme": {"cost_micro": -5}}},
        {"tenants": {"acme": {"cost_micro": MAX_USAGE_AMOUNT + 1}}},
        {"tenants": {"acme": {"cost_micro": 1.5}}},
        {"tenants": {f"t{i}": {"tokens": 1} for i in range(MAX_USAGE_TENANTS + 1)}},
        {"seq": 0},
        {"epoch": ""},
        {"epoch": "a b"},
        {"tenants": {"acme": {"tokens": 1, "dollars": 2}}},
    ],
    ids=[
        "no-tenants",
        "empty-name",
        "upper-case",
        "slash",
        "negative-tokens",
        "negative-cost",
        "huge",
        "fraction",
        "too-many-tenants",
        "seq-0",
        "no-epoch",
        "odd-epoch",
        "unknown-field",
    ],
)
def test_bad_reports_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        UsageReport.model_validate(report(**changes))


def test_the_most_tenants_allowed_fit_in_one_message() -> None:
    name = "t" * 40
    tenants = {f"{name}{i:03d}": {"tokens": 10**9, "cost_micro": 10**12} for i in range(256)}
    message = SessionMessage.model_validate({"usage": report(tenants=tenants)})
    assert len(message.model_dump_json()) < 64 * 1024


def test_a_session_message_carries_exactly_one_thing() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        SessionMessage.model_validate({"usage": report(), "load": {}})
    assert SessionMessage(load=NodeLoad()).usage is None


def test_replies_of_older_control_planes_still_parse() -> None:
    old = (
        '{"node_id": "n", "spiffe_id": "s", "lease_ttl_s": 10, "load_interval_s": 1.0,'
        ' "revision": 7}'
    )
    reply = SessionReply.model_validate_json(old)
    assert reply.usage_reports is False
    assert reply.usage is None


def test_a_reply_with_an_ack() -> None:
    ack = UsageAck(
        epoch="3f2a9c", seq=4, applied=True, totals={"acme": UsageTotal(tokens=9, cost_micro=3)}
    )
    reply = SessionReply(
        node_id="n",
        spiffe_id="s",
        lease_ttl_s=10,
        load_interval_s=1.0,
        revision=7,
        usage_reports=True,
        usage=ack,
    )
    assert SessionReply.model_validate_json(reply.model_dump_json()).usage == ack


def test_a_report_may_carry_answer_counts_alone_but_not_nothing() -> None:
    counts = AnswerCounts(by_tier={"local": 3}, first_choice=3)
    report = UsageReport(epoch="e", seq=1, answers=counts)
    decoded = SessionMessage.model_validate_json(SessionMessage(usage=report).model_dump_json())
    assert decoded.usage is not None
    assert decoded.usage.answers == counts
    assert counts.total() == 3
    assert not counts.is_empty()
    with pytest.raises(ValidationError, match="at least one tenant or answer counts"):
        UsageReport(epoch="e", seq=1)


@pytest.mark.parametrize(
    "bad",
    [
        {"by_tier": {"edge": 1}},
        {"by_tier": {"local": -1}},
        {"fallback_reasons": {"because": 1}},
        {"refused": {"abc": 1}},
        {"refused": {"200x": 1}},
    ],
)
def test_answer_counts_refuse_unknown_keys_and_negative_numbers(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AnswerCounts.model_validate(bad)


def test_a_reply_from_an_older_control_plane_offers_no_answer_reports() -> None:
    reply = SessionReply.model_validate(
        {"node_id": "n", "spiffe_id": "spiffe://td/node/n", "lease_ttl_s": 10,
         "load_interval_s": 1.0, "revision": 1, "usage_reports": True}
    )  # fmt: skip
    assert reply.answer_reports is False
