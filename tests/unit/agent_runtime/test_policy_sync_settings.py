"""``data.request_config`` on the node follows the bundle: the bundle's settings, overridden
key by key by node.yaml's ``authz.request_config``; a pushed limit takes effect with the
swap, and a local ``policy_dir`` reads ``data/request_config.yaml`` the same way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.agent_runtime.test_policy_sync import CATALOG, FakeSource, policy, ref
from tests.unit.reconciler.policyfiles import write_policy_dir
from tiermesh.agents.authz import (
    Authorizer,
    CheckInput,
    MemorySink,
    StaticBudgetSource,
    build_request_engine,
)
from tiermesh.agents.config import AgentConfig
from tiermesh.agents.runtime.errors import StartFailed
from tiermesh.agents.runtime.policy_sync import PolicySync, bundle_data, bundle_revision
from tiermesh.agents.runtime.requests import policy_data
from tiermesh.controlplane.api import RequestPolicyBundle
from tiermesh.rego import RegorusEngine

LONG = "many words " * 40  # about 110 tokens estimated


def with_settings(revision: int, settings: dict[str, Any] | None) -> RequestPolicyBundle:
    return policy(revision).model_copy(update={"request_config": settings})


async def decide(authorizer: Authorizer, sink: MemorySink, headers: dict[str, str]) -> str:
    body = json.dumps({"messages": [{"role": "user", "content": LONG}]}).encode()
    await authorizer.decide(CheckInput("POST", "/v1/chat", headers, body))
    return str(sink.entries[-1].result["reason"])


def node_sync(node_settings: dict[str, Any]) -> tuple[Authorizer, MemorySink, PolicySync]:
    first = with_settings(1, None)
    engine = build_request_engine(RegorusEngine, first.modules, bundle_data(first, node_settings))
    sink = MemorySink()
    authorizer = Authorizer(
        engine, sink, StaticBudgetSource({}), bundle_revision=bundle_revision(first.bundle)
    )
    sync = PolicySync(
        authorizer, engine, FakeSource(first), engine_factory=RegorusEngine,
        request_config=node_settings, current=first.bundle,
    )  # fmt: skip
    return authorizer, sink, sync


@pytest.fixture
async def plain() -> AsyncIterator[tuple[Authorizer, MemorySink, PolicySync]]:
    parts = node_sync({})
    yield parts
    parts[2].close()


def test_the_node_overrides_the_bundle_key_by_key() -> None:
    served = with_settings(1, {"default_tenant": "acme", "max_request_tokens": 5})
    data = bundle_data(served, {"max_request_tokens": 4096})
    assert data["request_config"] == {"default_tenant": "acme", "max_request_tokens": 4096}
    assert data["catalog"] == CATALOG.model_dump(mode="json")
    assert bundle_data(with_settings(1, None), {"x": 1})["request_config"] == {"x": 1}


async def test_a_pushed_limit_and_default_tenant_apply_with_the_swap(
    plain: tuple[Authorizer, MemorySink, PolicySync],
) -> None:
    authorizer, sink, sync = plain
    public = {"x-tiermesh-sensitivity": "public"}
    assert "no tenant" in await decide(authorizer, sink, public)
    assert await sync.adopt(with_settings(2, {"default_tenant": "acme", "max_request_tokens": 5}))
    reason = await decide(authorizer, sink, public)
    assert "exceeds the per-request limit 5" in reason
    assert "no tenant" not in reason
    assert sink.entries[-1].bundle_revision == bundle_revision(ref(2))
    # A later bundle without settings drops them again.
    assert await sync.adopt(with_settings(3, None))
    assert "no tenant" in await decide(authorizer, sink, public)


async def test_a_node_setting_wins_over_the_pushed_one() -> None:
    authorizer, sink, sync = node_sync({"max_request_tokens": 100000})
    try:
        assert await sync.adopt(with_settings(2, {"max_request_tokens": 5}))
        headers = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}
        assert await decide(authorizer, sink, headers) == "public: as declared"
    finally:
        sync.close()


def config(policy_dir: Path, settings: dict[str, Any]) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "node": {"id": "edge-1", "tier": "local"},
            "control_plane": {"trust_domain": "td", "ads": ["127.0.0.1:1"],
                              "node_api": ["127.0.0.1:2"], "join": ["127.0.0.1:3"]},
            "identity": {"state_dir": str(policy_dir / "state")},
            "authz": {"enabled": True, "policy_dir": str(policy_dir),
                      "request_config": settings},
        }
    )  # fmt: skip


def test_a_local_policy_dir_merges_its_settings_file(tmp_path: Path) -> None:
    directory = write_policy_dir(tmp_path / "policies")
    assert policy_data(config(directory, {}))[1]["request_config"] == {}
    (directory / "data" / "request_config.yaml").write_text(
        "default_tenant: acme\nmax_request_tokens: 5\n"
    )
    _, data = policy_data(config(directory, {"max_request_tokens": 64}))
    assert data["request_config"] == {"default_tenant": "acme", "max_request_tokens": 64}
    (directory / "data" / "request_config.yaml").write_text("limits: [1]\n")
    with pytest.raises(StartFailed, match=r"request_config\.yaml"):
        policy_data(config(directory, {}))
