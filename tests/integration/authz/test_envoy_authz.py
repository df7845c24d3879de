"""ext_authz in a real Envoy with the compiled config: the body decides the tier, the
filter fails closed, and every answered request has a durable decision record."""

from __future__ import annotations

import json

import pytest

from tests.integration.authz.conftest import MAX_BODY, AuthzMesh, chat
from tiermesh.agents.authz import BudgetState
from tiermesh.agents.decisionlog import read_spool
from tiermesh.controlplane.generators.routes import unmatched_body

pytestmark = pytest.mark.envoy

PUBLIC_REASONING = {
    "x-tiermesh-tenant": "acme",
    "x-tiermesh-sensitivity": "public",
    "x-tiermesh-task": "reasoning",
}
EMAIL = "Draft a reply to jane.doe@example.com about the renewal"
CARD = "Refund the order paid with 4111 1111 1111 1111 today"


def test_the_plan_puts_public_reasoning_on_the_cloud_and_restricted_local(
    authz_mesh: AuthzMesh,
) -> None:
    assert authz_mesh.chain("acme.public.reasoning.*")[0] == "cloud"
    assert authz_mesh.chain("acme.restricted.reasoning.*") == ["edge"]


def test_a_clean_public_body_goes_where_the_plan_puts_public_traffic(
    authz_mesh: AuthzMesh,
) -> None:
    reply = authz_mesh.send(PUBLIC_REASONING, chat("Explain the proof of Fermat's little theorem"))
    assert (reply.status, reply.backend, reply.tier) == (200, "cloud", "cloud")
    assert reply.decision_id is not None


@pytest.mark.parametrize("text", [EMAIL, CARD])
def test_a_body_with_pii_lands_on_the_local_tier_whatever_the_label(
    authz_mesh: AuthzMesh, text: str
) -> None:
    reply = authz_mesh.send(PUBLIC_REASONING, chat(text))
    assert (reply.status, reply.backend, reply.tier) == (200, "edge", "local")
    assert authz_mesh.backends["cloud"].models == []


def test_a_body_longer_than_the_limit_is_restricted(authz_mesh: AuthzMesh) -> None:
    reply = authz_mesh.send(PUBLIC_REASONING, chat("x" * (MAX_BODY * 2)))
    assert (reply.status, reply.tier) == (200, "local")


def test_a_spent_budget_takes_the_budget_fallback(authz_mesh: AuthzMesh) -> None:
    clean = chat("Explain the proof of Fermat's little theorem")
    spoofed = authz_mesh.send({**PUBLIC_REASONING, "x-tiermesh-budget": "exhausted"}, clean)
    assert spoofed.backend == "cloud", "a caller cannot set the budget header itself"
    authz_mesh.authz.budget.set("acme", BudgetState.of(100, 100))
    assert authz_mesh.send(PUBLIC_REASONING, clean).backend == "edge"


def test_a_denied_request_gets_403_and_reaches_no_backend(authz_mesh: AuthzMesh) -> None:
    reply = authz_mesh.send(PUBLIC_REASONING, chat("hi", max_tokens=20_000))
    assert reply.status == 403
    assert json.loads(reply.body)["reason"] == (
        "token estimate 20001 exceeds the per-request limit 10000"
    )
    assert reply.decision_id is not None
    assert authz_mesh.reached() == 0


def test_a_request_without_a_tenant_is_refused_by_the_request_policy_naming_why(
    authz_mesh: AuthzMesh,
) -> None:
    """No plan route matches it, so it reaches the catch-all route, where the request policy
    decides it (Envoy skips ext_authz for a request that matches no route at all)."""
    reply = authz_mesh.send({"x-tiermesh-sensitivity": "public"}, chat("hello"))
    assert reply.status == 403
    assert reply.decision_id is not None
    assert "x-tiermesh-tenant is missing" in reply.body, reply.body
    # This policy has no catalog to know tenants by, so it lets an unknown one through and
    # the catch-all route says why nothing matched.
    reply = authz_mesh.send({**PUBLIC_REASONING, "x-tiermesh-tenant": "nobody"}, chat("hello"))
    assert reply.status == 404
    assert reply.body == unmatched_body()
    assert authz_mesh.reached() == 0


def test_without_the_authz_server_requests_fail_closed(authz_mesh: AuthzMesh) -> None:
    authz_mesh.authz.stop_server()
    replies = [
        authz_mesh.send(PUBLIC_REASONING, chat(text)) for text in ("clean question", EMAIL, CARD)
    ]
    assert [r.status for r in replies] == [503, 503, 503]
    assert all(r.backend is None and r.decision_id is None for r in replies)
    assert authz_mesh.reached() == 0


def test_every_answered_request_has_a_durable_record_without_prompt_text(
    authz_mesh: AuthzMesh,
) -> None:
    replies = [
        authz_mesh.send(PUBLIC_REASONING, chat(text)) for text in ("clean question", EMAIL, CARD)
    ]
    replies.append(authz_mesh.send(PUBLIC_REASONING, chat("hi", max_tokens=20_000)))
    ids = [r.decision_id for r in replies]
    assert None not in ids
    # Durable means on disk when the answer came: read the spool while the log is open.
    records = {str(s.record.decision_id): s.record for s in read_spool(authz_mesh.spool)}
    assert set(ids) <= set(records)
    text = json.dumps([records[i].model_dump(mode="json") for i in ids if i])
    # The card number as sent and as digits alone: a bare "4111" also turns up by chance in
    # the records' hashes and signatures (hex and base64), about one run in a few dozen.
    secrets = ("jane.doe", "example.com", "4111 1111", "4111111111111111", "Refund", "Fermat")
    for secret in (*secrets, "clean question"):
        assert secret not in text
    by_id = {i: records[i] for i in ids if i}
    email_record = by_id[ids[1]]  # type: ignore[index]
    assert email_record.path == "tiermesh/request/decision"
    assert email_record.input["tenant"] == "acme"
    assert [f["kind"] for f in email_record.input["findings"]] == ["email"]
    assert email_record.result["sensitivity"] == "restricted"
    assert by_id[ids[3]].result["outcome"] == "deny"  # type: ignore[index]
