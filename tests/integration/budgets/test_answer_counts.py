"""Answer counts from a real Envoy's access log with the compiled config: the tier that
answered, first choice or budget fallback, and requests the node refused, exactly as sent.
(A dead first tier's retry is covered through the whole mesh in tests/e2e.)"""

from __future__ import annotations

import time

import pytest

from tests.integration.authz.conftest import chat
from tests.integration.budgets.backend import COMPLETION_TOKENS, PROMPT_TOKENS
from tests.integration.budgets.conftest import NOBODY, BudgetMesh
from tiermesh.controlplane.api import AnswerCounts

pytestmark = pytest.mark.envoy

TOKENS = PROMPT_TOKENS + COMPLETION_TOKENS
SETTLE_S = 0.5
"""Longer than the access log's flush interval (50 ms) and the server's hand-over."""


def public(tenant: str) -> dict[str, str]:
    return {
        "x-tiermesh-tenant": tenant,
        "x-tiermesh-sensitivity": "public",
        "x-tiermesh-task": "reasoning",
    }


def counted(mesh: BudgetMesh, answers: int, timeout_s: float = 10) -> AnswerCounts:
    """What the tally holds once ``answers`` requests are in (and no more came)."""
    deadline = time.monotonic() + timeout_s
    tally = mesh.agent.ledger.answers
    while time.monotonic() < deadline:
        if tally.seen() >= answers:
            break
        time.sleep(0.05)
    time.sleep(SETTLE_S)
    counts = tally.take()
    assert counts is not None, "nothing counted"
    return counts


def test_first_choice_fallback_budget_and_refusals_are_counted_as_sent(
    budget_mesh: BudgetMesh,
) -> None:
    time.sleep(SETTLE_S)
    budget_mesh.agent.ledger.answers.take()  # the fixture's readiness probes
    chain = budget_mesh.chain("globex.public.reasoning.*")
    assert chain[0] == "cloud"
    assert len(chain) > 1

    reply = budget_mesh.send(public("globex"), chat("first choice"))
    assert (reply.status, reply.tier) == (200, "cloud")
    assert counted(budget_mesh, 1) == AnswerCounts(by_tier={"cloud": 1}, first_choice=1)

    refused = budget_mesh.send(NOBODY, chat("who am I"))
    assert refused.status >= 400
    assert counted(budget_mesh, 1) == AnswerCounts(refused={str(refused.status): 1})

    # acme's budget is one cloud answer: the next is its budget fallback.
    assert budget_mesh.send(public("acme"), chat("spend it")).tier == "cloud"
    budget_mesh.wait_tokens("acme", TOKENS)
    fallback = budget_mesh.send(public("acme"), chat("after the budget"))
    assert (fallback.status, fallback.tier) == (200, "local")
    assert counted(budget_mesh, 2) == AnswerCounts(
        by_tier={"cloud": 1, "local": 1},
        first_choice=1,
        fallback=1,
        fallback_reasons={"budget": 1},
    )
