"""The sensitivity floor: a mistaken request policy cannot lower what the request shows,
and nothing that could carry personal data reaches the policy input or the record."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import jsonschema
import pytest

from tests.unit.authz.conftest import REQUEST_POLICY
from tiermesh.agents.authz import Authorizer, CheckInput, MemorySink, StaticBudgetSource
from tiermesh.agents.authz.decide import MASKED
from tiermesh.agents.authz.floor import inspect_request
from tiermesh.agents.decisionlog import Masking
from tiermesh.controlplane.api import DecisionRecord
from tiermesh.controlplane.audit.replay import replay
from tiermesh.rego import RegorusEngine

SCHEMA = json.loads(
    (REQUEST_POLICY.parent / "schemas" / "request_input.schema.json").read_text(encoding="utf-8")
)
PII = "mail jane.doe@example.com, card 4111 1111 1111 1111"

# A request policy written by a mistaken author: it echoes the caller's label and never
# looks at the findings, and it spells its header in its own case.
ECHO_POLICY = """package tiermesh.request

level := input.headers.sensitivity if {
	input.headers.sensitivity in {"public", "internal", "restricted"}
} else := "public"

decision := {
\t"allow": true,
\t"sensitivity": level,
\t"budget_exhausted": false,
\t"reason": "as the caller said",
\t"headers": {"X-Tiermesh-Sensitivity": level},
}
"""


@pytest.fixture
def echo() -> Iterator[tuple[Authorizer, MemorySink]]:
    engine = RegorusEngine()
    engine.load({"echo.rego": ECHO_POLICY})
    sink = MemorySink()
    yield Authorizer(engine, sink, StaticBudgetSource(), max_body_bytes=4096), sink
    engine.close()


def chat(text: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": text}]}).encode()


def request(body: bytes = b"", path: str = "/v1/chat/completions", **headers: str) -> CheckInput:
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return CheckInput("POST", path, {"content-type": "application/json", **named}, body)


async def test_a_policy_that_echoes_the_label_cannot_send_pii_as_public(
    echo: tuple[Authorizer, MemorySink],
) -> None:
    authorizer, sink = echo
    verdict = await authorizer.decide(request(chat(PII), x_tiermesh_sensitivity="public"))
    assert verdict.allowed
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "restricted"
    assert "X-Tiermesh-Sensitivity" not in verdict.set_headers
    (entry,) = sink.entries
    assert entry.result["sensitivity"] == "restricted"
    assert entry.result["headers"] == {"x-tiermesh-sensitivity": "restricted"}
    assert entry.result["policy_answer"]["sensitivity"] == "public"
    assert entry.result["policy_answer"]["headers"] == {"X-Tiermesh-Sensitivity": "public"}
    assert entry.result["floor"]["sensitivity"] == "restricted"
    assert "body contains email, payment_card" in entry.result["reason"]


@pytest.mark.parametrize(
    ("declared", "routed"),
    [("restricted", "restricted"), ("internal", "internal"), ("public", "public")],
)
async def test_the_declared_label_is_a_floor_too(
    echo: tuple[Authorizer, MemorySink], declared: str, routed: str
) -> None:
    authorizer, _ = echo
    verdict = await authorizer.decide(request(chat("hello"), x_tiermesh_sensitivity=declared))
    assert verdict.set_headers["x-tiermesh-sensitivity"] == routed


async def test_a_missing_or_unknown_label_is_restricted_whatever_the_policy_says(
    echo: tuple[Authorizer, MemorySink],
) -> None:
    authorizer, sink = echo
    missing = await authorizer.decide(request(chat("hello")))
    unknown = await authorizer.decide(request(chat("hello"), x_tiermesh_sensitivity="Public"))
    assert missing.set_headers["x-tiermesh-sensitivity"] == "restricted"
    assert unknown.set_headers["x-tiermesh-sensitivity"] == "restricted"
    assert [e.result["floor"]["reasons"] for e in sink.entries] == [
        ["x-tiermesh-sensitivity missing"],
        ["x-tiermesh-sensitivity is not a known label"],
    ]


@pytest.mark.parametrize(
    ("path", "headers", "where"),
    [
        ("/v1/chat/completions?user=jane.doe%40example.com", {}, "query"),
        ("/v1/chat/completions?ref=jane.doe@example.com", {}, "query"),
        ("/v1/chat/completions?user=jane.doe%2540example.com", {}, "query"),
        ("/v1/chat/completions?card=4111+1111+1111+1111", {}, "query"),
        ("/v1/chat/completions/jane.doe@example.com", {}, "path"),
        ("/v1/chat/completions", {"x-user": "jane.doe@example.com"}, "header x-user"),
        ("/v1/chat/completions", {"x-tiermesh-task": "078-05-1120"}, "header x-tiermesh-task"),
        ("/v1/chat/completions", {"user-agent": "app (+44 20 7946 0958)"}, "header user-agent"),
        (
            "/v1/chat/completions",
            {"x-note": "\uff14\uff11\uff11\uff11 1111 1111 1111"},
            "header x-note",
        ),
    ],
)
async def test_pii_outside_the_body_makes_the_request_restricted_and_is_masked(
    echo: tuple[Authorizer, MemorySink], path: str, headers: dict[str, str], where: str
) -> None:
    authorizer, sink = echo
    verdict = await authorizer.decide(
        CheckInput(
            "POST",
            path,
            {"x-tiermesh-sensitivity": "public", "content-type": "application/json", **headers},
            chat("hello"),
        )
    )
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "restricted"
    (entry,) = sink.entries
    assert where in {f["where"] for f in entry.input["request_findings"]}
    jsonschema.validate(entry.input, SCHEMA)
    recorded = json.dumps(Masking().apply(entry.input))
    for secret in ("jane.doe", "example.com", "4111", "078-05", "7946", "\uff14"):
        assert secret not in recorded
    if where in {"path", "query"}:
        assert entry.input["request"]["path"] in ("/v1/chat/completions", MASKED)


async def test_routing_header_values_that_are_not_labels_are_masked(
    echo: tuple[Authorizer, MemorySink],
) -> None:
    authorizer, sink = echo
    await authorizer.decide(
        request(chat("hello"), x_tiermesh_sensitivity="public", x_tiermesh_model="a b <c>")
    )
    (entry,) = sink.entries
    assert entry.input["headers"] == {"sensitivity": "public", "model": MASKED}


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip", "x-custom"])
async def test_a_content_encoded_body_is_restricted(
    echo: tuple[Authorizer, MemorySink], encoding: str
) -> None:
    authorizer, sink = echo
    verdict = await authorizer.decide(
        request(chat("hello"), x_tiermesh_sensitivity="public", content_encoding=encoding)
    )
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "restricted"
    assert "body is content-encoded: not inspectable" in sink.entries[0].result["floor"]["reasons"]


async def test_a_clean_request_keeps_its_label_and_its_path(
    echo: tuple[Authorizer, MemorySink],
) -> None:
    authorizer, sink = echo
    verdict = await authorizer.decide(
        request(
            chat("hello"), path="/v1/chat/completions?stream=true", x_tiermesh_sensitivity="public"
        )
    )
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "public"
    (entry,) = sink.entries
    assert entry.input["request"]["path"] == "/v1/chat/completions"
    assert "request_findings" not in entry.input
    assert entry.result["floor"] == {"sensitivity": "public", "reasons": []}


def test_fixed_shape_headers_are_not_scanned() -> None:
    found = inspect_request(
        "/v1/models",
        {
            "content-length": "4111111111111111",
            "x-envoy-auth-partial-body": "false",
            ":method": "POST",
        },
    )
    assert found == ()


def test_a_credential_header_is_scanned_since_it_may_be_forwarded() -> None:
    found = inspect_request("/v1/models", {"authorization": "Bearer jane.doe@example.com"})
    assert {f.where for f in found} == {"header authorization"}


def test_headers_envoy_forwards_are_scanned_whatever_their_prefix() -> None:
    found = inspect_request(
        "/v1/models",
        {"x-envoy-note": "jane.doe@example.com", ":authority": "jane.doe@example.com"},
    )
    assert {f.where for f in found} == {"header x-envoy-note", "header :authority"}


async def test_replaying_a_raised_decision_with_the_same_policy_changes_nothing(
    echo: tuple[Authorizer, MemorySink],
) -> None:
    authorizer, sink = echo
    await authorizer.decide(request(chat(PII), x_tiermesh_sensitivity="public"))
    (entry,) = sink.entries
    record = DecisionRecord(
        decision_id=entry.decision_id,
        path=entry.path,
        input=entry.input,
        result=entry.result,
        timestamp=dt.datetime.now(dt.UTC),
        node_spiffe_id="spiffe://test/node/edge-1",
        kind="request",
        seq=0,
        prev_hash="0" * 64,
        hash="0" * 64,
        signature="",
    )
    engine = RegorusEngine()
    engine.load({"echo.rego": ECHO_POLICY})
    try:
        report = replay([record], engine.evaluate)
    finally:
        engine.close()
    assert (report.replayed, report.changes) == (1, [])
