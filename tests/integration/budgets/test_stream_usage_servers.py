"""Streams charged whether or not the client asked, against real servers: llama.cpp (tiny
GGUF, the agent's served app) as the local tier and the HTTPS cloud stand-in as the cloud
tier (both stream usage only when asked), behind a real Envoy with usage accounting."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.budgets.harness import BudgetThread
from tests.integration.compiler.conftest import eventually
from tests.integration.flows.conftest import (
    KEY_NAME,
    NODE,
    Answer,
    envoy_with,
    flow_catalog,
    send,
)
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.agents.models import LlamaServer
from tiermesh.agents.usage import Prices, TenantUsage
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import AuthzSettings, MeshModel, NodeSettings, UsageSettings
from tiermesh.demo.cloud_standin import CloudStandin
from tiermesh.procs.ports import free_port

pytestmark = [pytest.mark.envoy, pytest.mark.model]

TENANT = "acme"


@dataclass
class ServersMesh:
    listener: int
    agent: BudgetThread

    def chat(self, task: str, **extra: Any) -> Answer:
        body = {
            "model": "any",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": True,
            **extra,
        }
        headers = {
            "content-type": "application/json",
            "x-tiermesh-tenant": TENANT,
            "x-tiermesh-sensitivity": "public",
            "x-tiermesh-task": task,
        }
        return send(self.listener, headers, json.dumps(body).encode())

    def charged(self, before: TenantUsage, tokens: int) -> int:
        """Tokens charged since ``before``, once at least ``tokens`` are, and a little
        longer (a second entry would show)."""
        deadline = time.monotonic() + 10
        while self.agent.totals(TENANT).tokens < before.tokens + tokens:
            assert time.monotonic() < deadline, self.agent.totals(TENANT)
            time.sleep(0.05)
        time.sleep(0.3)
        return self.agent.totals(TENANT).tokens - before.tokens


@pytest.fixture(scope="module")
def servers_mesh(
    tmp_path_factory: pytest.TempPathFactory,
    edge_server: LlamaServer,
) -> Iterator[ServersMesh]:
    tmp_path = tmp_path_factory.mktemp("servers")
    cloud = CloudStandin(workdir=tmp_path / "cloud")
    cloud.start()
    catalog = flow_catalog(edge_server.port, cloud.port)
    agent = BudgetThread(tmp_path, Prices.from_catalog(catalog))
    try:
        listener = free_port()
        settings = NodeSettings(
            app_port=listener,
            authz=AuthzSettings(port=agent.authz_port),
            credentials={KEY_NAME: cloud.api_key},
            usage=UsageSettings(port=agent.usage_port, flush_interval_ms=50),
        )
        model = MeshModel.build([evaluate_plan(catalog)], {NODE: settings})
        with envoy_with(compile_snapshot(model, NODE), tmp_path / "envoy"):
            mesh = ServersMesh(listener, agent)
            eventually(lambda: mesh.chat("reasoning").tier == "cloud", what="cloud answering")
            # The probes' streams are charged too; let those entries land first.
            mesh.charged(TenantUsage(), 1)
            yield mesh
    finally:
        agent.close()
        cloud.stop()


def usage_events(answer: Answer) -> list[dict[str, Any]]:
    events = [e.removeprefix("data: ") for e in answer.body.split("\n\n") if e]
    return [json.loads(e)["usage"] for e in events if e != "[DONE]" and '"choices": []' in e]


@pytest.mark.parametrize(("task", "tier"), [("classify", "local"), ("reasoning", "cloud")])
def test_a_stream_is_charged_the_tokens_the_server_reports(
    servers_mesh: ServersMesh, task: str, tier: str
) -> None:
    before = servers_mesh.agent.totals(TENANT)
    asked = servers_mesh.chat(task, stream_options={"include_usage": True})
    assert (asked.status, asked.tier) == (200, tier), asked.body
    (usage,) = usage_events(asked)
    tokens = usage["prompt_tokens"] + usage["completion_tokens"]
    assert tokens > 0
    assert servers_mesh.charged(before, tokens) == tokens

    before = servers_mesh.agent.totals(TENANT)
    plain = servers_mesh.chat(task)
    assert (plain.status, plain.tier) == (200, tier), plain.body
    assert usage_events(plain) == []
    assert plain.body.endswith("data: [DONE]\n\n")
    # Same request, greedy decoding: the same tokens, charged though nobody asked.
    assert servers_mesh.charged(before, tokens) == tokens
