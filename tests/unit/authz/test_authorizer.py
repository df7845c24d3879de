"""The authorizer on the shipped policy: headers to set, denials, failures, the record."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.unit.authz.conftest import REQUEST_POLICY, Rig
from tiermesh.agents.authz import (
    DECISION_ID_HEADER,
    RECORD_PATH,
    Authorizer,
    BudgetUnavailable,
    CheckInput,
    DecisionNotRecorded,
    MemorySink,
    StaticBudgetSource,
)
from tiermesh.agents.decisionlog import DecisionEntry, Masking
from tiermesh.rego import RegorusEngine

SCHEMA = json.loads(
    (REQUEST_POLICY.parent / "schemas" / "request_input.schema.json").read_text(encoding="utf-8")
)
PROMPT = "Please email jane.doe@example.com the card 4111 1111 1111 1111"


def check(body: bytes = b"", **headers: str) -> CheckInput:
    named = {f"x-tiermesh-{k}": v for k, v in headers.items()}
    return CheckInput("POST", "/v1/chat/completions?x=1", {**named}, body)


def chat(text: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": text}]}).encode()


async def test_a_clean_public_request_keeps_public(rig: Rig) -> None:
    verdict = await rig.authorizer.decide(
        check(chat("hello there"), tenant="acme", sensitivity="public")
    )
    assert (verdict.outcome, verdict.status) == ("allow", 200)
    assert verdict.set_headers == {
        "x-tiermesh-sensitivity": "public",
        DECISION_ID_HEADER: str(verdict.decision_id),
    }
    assert verdict.remove_headers == ("x-tiermesh-budget",)


async def test_pii_makes_a_public_request_restricted_and_the_record_has_no_text(rig: Rig) -> None:
    verdict = await rig.authorizer.decide(check(chat(PROMPT), tenant="acme", sensitivity="public"))
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "restricted"
    (entry,) = rig.sink.entries
    assert entry.path == RECORD_PATH
    assert entry.decision_id == verdict.decision_id
    assert entry.result["outcome"] == "allow"
    assert entry.result["reason"] == "restricted: body contains email, payment_card"
    jsonschema.validate(entry.input, SCHEMA)
    recorded = json.dumps(Masking().apply(entry.input))
    for secret in ("jane.doe", "example.com", "4111", "Please"):
        assert secret not in recorded
    assert entry.input["tenant"] == "acme"
    assert entry.input["token_estimate"] > 0
    assert entry.input["request"]["path"] == "/v1/chat/completions"
    assert set(entry.timers) >= {"timer_rego_query_eval_ns", "timer_server_handler_ns"}


async def test_a_spent_budget_sets_the_budget_header(rig: Rig) -> None:
    verdict = await rig.authorizer.decide(check(chat("hi"), tenant="broke", sensitivity="public"))
    assert verdict.set_headers["x-tiermesh-budget"] == "exhausted"
    assert verdict.remove_headers == ()


async def test_missing_headers_are_a_clear_denial(rig: Rig) -> None:
    verdict = await rig.authorizer.decide(check(b"\xff\xfe garbage"))
    assert (verdict.outcome, verdict.status) == ("deny", 403)
    assert verdict.set_headers == {DECISION_ID_HEADER: str(verdict.decision_id)}
    body = json.loads(verdict.denial_body())
    assert body["reason"].startswith("no tenant")
    assert body["decision_id"] == str(verdict.decision_id)
    jsonschema.validate(rig.sink.entries[0].input, SCHEMA)


async def test_too_many_tokens_is_denied(rig: Rig) -> None:
    headers = {"x-tiermesh-tenant": "acme", "content-length": "99999"}
    verdict = await rig.authorizer.decide(CheckInput("POST", "/", headers, chat("x" * 4000)))
    assert verdict.outcome == "deny"
    assert "token estimate" in verdict.decision["reason"]


async def test_policy_headers_outside_the_namespace_are_dropped(tmp_path: Path) -> None:
    engine = RegorusEngine()
    engine.load(
        {
            "p.rego": "package tiermesh.request\n"
            'decision := {"allow": true, "sensitivity": "public", "budget_exhausted": false,'
            ' "reason": "r", "headers": {"authorization": "x", "X-Tiermesh-Task": "t",'
            ' "x-tiermesh-model": "a\\nb"}}\n'
        }
    )
    verdict = await Authorizer(engine, MemorySink(), StaticBudgetSource()).decide(check())
    assert set(verdict.set_headers) == {
        "x-tiermesh-task",
        "x-tiermesh-sensitivity",
        DECISION_ID_HEADER,
    }
    # no label declared: the floor, not the policy's "public", decides
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "restricted"
    engine.close()


@pytest.mark.parametrize(
    "source",
    [
        "package tiermesh.request\n",
        'package tiermesh.request\ndecision := {"allow": "yes"}\n',
        "package tiermesh.request\ndecision := 1 / 0\n",
    ],
)
async def test_a_broken_policy_is_recorded_and_answered_503(source: str) -> None:
    engine = RegorusEngine()
    engine.load({"p.rego": source})
    sink = MemorySink()
    verdict = await Authorizer(engine, sink, StaticBudgetSource()).decide(check(tenant="acme"))
    assert (verdict.outcome, verdict.status, verdict.allowed) == ("error", 503, False)
    assert sink.entries[0].result["outcome"] == "error"
    engine.close()


class _FailingSink:
    async def record(self, entry: DecisionEntry) -> None:
        raise OSError("disk full")


class _BrokenBudget:
    async def state(self, tenant: str) -> object:
        raise BudgetUnavailable("test", "down")


async def test_an_unrecorded_decision_is_never_answered(rig: Rig) -> None:
    authorizer = Authorizer(rig.engine, _FailingSink(), rig.budget)
    with pytest.raises(DecisionNotRecorded, match="disk full"):
        await authorizer.decide(check(tenant="acme", sensitivity="public"))


async def test_an_unavailable_budget_is_unknown_not_fatal(rig: Rig) -> None:
    authorizer = Authorizer(rig.engine, rig.sink, _BrokenBudget())  # type: ignore[arg-type]
    verdict = await authorizer.decide(check(tenant="acme", sensitivity="public"))
    assert verdict.allowed
    assert rig.sink.entries[0].input["budget"]["known"] is False
