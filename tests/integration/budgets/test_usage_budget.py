"""Usage from Envoy's access logs in a real Envoy with the compiled config: tokens and
spend are counted per tenant, and a tenant whose budget is spent is answered by the local
tier (budget fallback) with 200, never 429, while other tenants keep their routes."""

from __future__ import annotations

import json

import pytest

from tests.integration.authz.conftest import chat
from tests.integration.budgets.backend import COMPLETION_TOKENS, PROMPT_TOKENS
from tests.integration.budgets.conftest import TINY_BUDGET, BudgetMesh

pytestmark = pytest.mark.envoy

TOKENS = PROMPT_TOKENS + COMPLETION_TOKENS
COST_MICRO = 180_000  # 120 * 1.0 / 1000 + 30 * 2.0 / 1000 USD


def public(tenant: str) -> dict[str, str]:
    return {
        "x-tiermesh-tenant": tenant,
        "x-tiermesh-sensitivity": "public",
        "x-tiermesh-task": "reasoning",
    }


def test_the_plan_sends_public_reasoning_to_the_cloud(budget_mesh: BudgetMesh) -> None:
    assert budget_mesh.chain("acme.public.reasoning.*")[0] == "cloud"
    assert budget_mesh.chain("globex.public.reasoning.*")[0] == "cloud"


def test_tokens_and_cost_of_a_json_answer_are_counted_for_its_tenant(
    budget_mesh: BudgetMesh,
) -> None:
    reply = budget_mesh.send(public("globex"), chat("Explain Fermat's little theorem"))
    assert (reply.status, reply.tier) == (200, "cloud")
    assert json.loads(reply.body)["usage"]["total_tokens"] == TOKENS
    totals = budget_mesh.wait_tokens("globex", TOKENS)
    assert (totals.tokens, totals.cost_micro) == (TOKENS, COST_MICRO)
    assert budget_mesh.agent.totals("acme").tokens == 0
    budget = json.loads(budget_mesh.agent.budget_file.read_text())
    month = budget_mesh.agent.ledger.month
    assert budget["globex"] == {"spent_usd": 0.18, "limit_usd": 100.0, "month": month}


def test_a_stream_is_counted_from_its_last_usage_chunk_and_passes_through_whole(
    budget_mesh: BudgetMesh,
) -> None:
    # The client asks for the usage chunk, so it keeps it (see test_stream_usage.py for
    # a client that does not ask).
    asked = {"include_usage": True}
    reply = budget_mesh.send(public("globex"), chat("Stream it", stream=True, stream_options=asked))
    assert (reply.status, reply.tier) == (200, "cloud")
    assert reply.body.rstrip().endswith("data: [DONE]")
    assert reply.body.count("data: ") == 4
    totals = budget_mesh.wait_tokens("globex", TOKENS)
    # The escaped decoy "usage" inside the content (999999 tokens) is not counted.
    assert (totals.tokens, totals.cost_micro) == (TOKENS, COST_MICRO)


def test_a_spent_budget_moves_the_tenant_to_the_local_tier_never_429(
    budget_mesh: BudgetMesh,
) -> None:
    first = budget_mesh.send(public("acme"), chat("Explain Fermat's little theorem"))
    assert (first.status, first.backend, first.tier) == (200, "cloud", "cloud")
    spent = budget_mesh.wait_tokens("acme", TOKENS)
    assert spent.spent_usd >= TINY_BUDGET

    after = [budget_mesh.send(public("acme"), chat(f"question {i}")) for i in range(3)]
    assert [(r.status, r.backend, r.tier) for r in after] == [(200, "edge", "local")] * 3
    other = budget_mesh.send(public("globex"), chat("Explain Fermat's little theorem"))
    assert (other.status, other.backend, other.tier) == (200, "cloud", "cloud")
    assert budget_mesh.backends["cloud"].requests == ["acme", "globex"]
    # Local answers cost nothing; acme's tokens still count.
    totals = budget_mesh.wait_tokens("acme", 4 * TOKENS)
    assert totals.cost_micro == COST_MICRO
