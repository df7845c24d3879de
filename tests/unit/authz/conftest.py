"""An authorizer on the shipped request policy (regorus), a memory sink and a budget table;
its answers are memoized as on a running node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tiermesh.agents.authz import (
    Authorizer,
    BudgetState,
    MemorySink,
    StaticBudgetSource,
    load_request_policy,
    request_policy_modules,
)
from tiermesh.rego import RegorusEngine

REQUEST_POLICY = Path(__file__).resolve().parents[3] / "policies" / "request"


@dataclass
class Rig:
    authorizer: Authorizer
    sink: MemorySink
    budget: StaticBudgetSource
    engine: RegorusEngine


@pytest.fixture
def rig() -> Iterator[Rig]:
    engine = RegorusEngine()
    load_request_policy(engine, REQUEST_POLICY, {"request_config": {"max_request_tokens": 10_000}})
    sink = MemorySink()
    budget = StaticBudgetSource({"acme": BudgetState.of(1, 100), "broke": BudgetState.of(9, 5)})
    modules = request_policy_modules(REQUEST_POLICY)
    authorizer = Authorizer(engine, sink, budget, max_body_bytes=4096, modules=modules)
    assert authorizer.cache is not None
    yield Rig(authorizer, sink, budget, engine)
    engine.close()
