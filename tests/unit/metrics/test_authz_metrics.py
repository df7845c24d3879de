"""Decision metrics from real verdicts of the shipped request policy (regorus, memory
sink): decisions, declared vs floor vs effective sensitivity, why it was raised, and
personal data found, each counted exactly once per check."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiermesh.agents.authz import (
    Authorizer,
    BudgetState,
    CheckInput,
    MemorySink,
    StaticBudgetSource,
    load_request_policy,
)
from tiermesh.agents.metrics import NodeMetrics
from tiermesh.agents.metrics.authz import reason_category
from tiermesh.rego import RegorusEngine

REQUEST_POLICY = Path(__file__).resolve().parents[3] / "policies" / "request"


@pytest.fixture
def authorizer() -> Iterator[Authorizer]:
    engine = RegorusEngine()
    load_request_policy(engine, REQUEST_POLICY, {"request_config": {"max_request_tokens": 10_000}})
    budget = StaticBudgetSource({"acme": BudgetState.of(1, 100)})
    yield Authorizer(engine, MemorySink(), budget, max_body_bytes=4096)
    engine.close()


def check(text: str, **headers: str) -> CheckInput:
    named = {f"x-tiermesh-{k}": v for k, v in headers.items()}
    body = json.dumps({"messages": [{"role": "user", "content": text}]}).encode()
    return CheckInput("POST", "/v1/chat/completions", named, body)


def value(metrics: NodeMetrics, sample: str, **labels: str) -> float:
    return sum(
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_a_clean_public_request_counts_one_allowed_public_decision(
    authorizer: Authorizer,
) -> None:
    metrics = NodeMetrics()
    verdict = await authorizer.decide(check("hello", tenant="acme", sensitivity="public"))
    metrics.authz.observe(verdict, 0.002)
    assert value(metrics, "tiermesh_authz_decisions_total", hop="app", outcome="allow",
                 status="200") == 1  # fmt: skip
    assert value(metrics, "tiermesh_sensitivity_decisions_total", declared="public",
                 floor="public", effective="public") == 1  # fmt: skip
    assert value(metrics, "tiermesh_sensitivity_reasons_total") == 0
    assert value(metrics, "tiermesh_pii_findings_total") == 0
    assert value(metrics, "tiermesh_authz_duration_seconds_count", hop="app") == 1
    assert value(metrics, "tiermesh_authz_duration_seconds_sum") == pytest.approx(0.002)


async def test_personal_data_raises_the_label_and_counts_each_finding(
    authorizer: Authorizer,
) -> None:
    metrics = NodeMetrics()
    text = "email jane.doe@example.com and joe@example.org, card 4111 1111 1111 1111"
    verdict = await authorizer.decide(check(text, tenant="acme", sensitivity="public"))
    metrics.authz.observe(verdict, 0.001)
    assert value(metrics, "tiermesh_sensitivity_decisions_total", declared="public",
                 floor="restricted", effective="restricted") == 1  # fmt: skip
    assert value(metrics, "tiermesh_sensitivity_reasons_total", reason="pii_body") == 1
    assert value(metrics, "tiermesh_pii_findings_total", kind="email", where="body") == 2
    kinds = {kind for kind, _, _ in verdict.findings}
    assert value(metrics, "tiermesh_pii_findings_total") == sum(c for _, _, c in verdict.findings)
    assert len(kinds) >= 2


async def test_a_missing_label_is_counted_as_missing_and_restricted(
    authorizer: Authorizer,
) -> None:
    metrics = NodeMetrics()
    verdict = await authorizer.decide(check("hello", tenant="acme"))
    metrics.authz.observe(verdict, 0.001)
    assert value(metrics, "tiermesh_sensitivity_decisions_total", declared="missing",
                 floor="restricted", effective="restricted") == 1  # fmt: skip
    assert value(metrics, "tiermesh_sensitivity_reasons_total", reason="label_missing") == 1


async def test_a_denial_and_an_unrecorded_check_are_decisions_without_a_sensitivity(
    authorizer: Authorizer,
) -> None:
    metrics = NodeMetrics()
    verdict = await authorizer.decide(check("hello", sensitivity="public"))
    metrics.authz.observe(verdict, 0.001)
    metrics.authz.observe(None, 0.5)
    assert verdict.outcome != "allow"
    assert value(metrics, "tiermesh_authz_decisions_total", outcome=verdict.outcome,
                 status=str(verdict.status)) == 1  # fmt: skip
    assert value(metrics, "tiermesh_authz_decisions_total", outcome="unrecorded",
                 status="503") == 1  # fmt: skip
    assert value(metrics, "tiermesh_sensitivity_decisions_total") == 0


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("body contains email, phone", "pii_body"),
        ("path contains email", "pii_path"),
        ("query contains iban", "pii_query"),
        ("header x-note contains email", "pii_header"),
        ("body not fully inspected", "truncated"),
        ("body is content-encoded: not inspectable", "content_encoded"),
        ("x-tiermesh-sensitivity missing", "label_missing"),
        ("x-tiermesh-sensitivity is not a known label", "label_unknown"),
        ("body is not plain text", "uninspectable"),
    ],
)
def test_floor_reasons_fall_into_fixed_categories(reason: str, category: str) -> None:
    assert reason_category(reason) == category
