"""A node's edge listener with real servers: llama.cpp (tiny GGUF) as the local tier and the
HTTPS cloud stand-in (which requires its API key) as the cloud tier, compiled from a plan
the real routing policy made and pushed to a real Envoy, which runs the real request
policy (ext_authz) first."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.compiler.conftest import eventually
from tests.support.authz import authz_settings, running_authz
from tests.support.xdsthread import XdsThread
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.agents.models import LlamaServer
from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import MeshModel, NodeSettings
from tiermesh.demo.cloud_standin import CloudStandin
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, Snapshot, render_bootstrap

NODE = "edge-1"
HEDGE_MS = 600
KEY_NAME = "frontier-key"


def _tier(timeout_ms: int, consecutive_5xx: int) -> dict[str, Any]:
    return {
        "timeout_ms": timeout_ms,
        "first_byte_timeout_ms": HEDGE_MS,
        "retries": {"count": 0, "backoff_base_ms": 10, "backoff_max_ms": 50},
        "circuit_breaker": {
            "max_connections": 8,
            "max_pending": 8,
            "max_requests": 8,
            "max_retries": 8,
        },
        "outlier_detection": {
            "consecutive_5xx": consecutive_5xx,
            "interval_ms": 60000,
            "base_ejection_ms": 30000,
            "max_ejection_percent": 100,
        },
        "health_check": {
            "interval_ms": 60000,
            "timeout_ms": 2000,
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
        },
    }


def flow_catalog(edge_port: int, cloud_port: int, min_confidence: float = 0.5) -> Catalog:
    """``edge`` (local, llama.cpp, complexity 1) and ``cloud`` (the stand-in, complexity 5,
    with credential ``frontier-key``); tenant ``acme``; tasks ``classify`` (edge first),
    ``reasoning`` (cloud first, edge as the degraded fallback) and ``triage`` (a cascade:
    edge first, the cloud when edge's answer is less confident than ``min_confidence``)."""

    def backend(name: str, tier: str, port: int, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "tier": tier,
            "region": "eu-west",
            "residency": "eu",
            "cost_per_1k_tokens": {"input": 0, "output": 0},
            "capacity": 8,
            "models": [f"{name}-model"],
            "endpoint": {"host": "127.0.0.1", "port": port},
            **extra,
        }

    return Catalog.model_validate(
        {
            "defaults": {
                "tiers": {
                    "local": _tier(20000, 50),
                    "private": _tier(20000, 50),
                    "cloud": _tier(20000, 2),
                },
                "default_task": "classify",
            },
            "backends": [
                backend("edge", "local", edge_port, node=NODE, max_complexity=1),
                backend(
                    "cloud",
                    "cloud",
                    cloud_port,
                    max_complexity=5,
                    endpoint={"host": "127.0.0.1", "port": cloud_port, "tls": True},
                    credential={"secret": KEY_NAME},
                ),
            ],
            "tenants": [
                {
                    "name": "acme",
                    "residency": ["eu"],
                    "monthly_budget_usd": 100,
                    "allowed_tiers": ["local", "cloud"],
                }
            ],
            "tasks": [
                {"name": "classify", "complexity": 1},
                {"name": "reasoning", "complexity": 4},
                {
                    "name": "triage",
                    "complexity": 1,
                    "strategy": "cascade",
                    "min_confidence": min_confidence,
                },
            ],
        }
    )


@dataclass
class Answer:
    status: int
    tier: str | None
    backend: str | None
    body: str
    elapsed_s: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FlowMesh:
    """The running servers, Envoy and the plan; ``push`` replaces the node's snapshot."""

    edge: LlamaServer
    cloud: CloudStandin
    plan: Plan
    listener: int
    envoy: EnvoyProcess
    push: Callable[[Snapshot], None]
    settings: NodeSettings
    extra: dict[str, Any] = field(default_factory=dict)

    def chain(self, route: str) -> list[str]:
        (match,) = [r for r in self.plan.routes if r.name == route]
        return [step.backend for step in match.chain]

    def chat(self, task: str, text: str = "hello", *, stream: bool = False, **extra: Any) -> Answer:
        body: dict[str, Any] = {
            "model": "any",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 8,
            **extra,
        }
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        headers = {
            "content-type": "application/json",
            "x-tiermesh-tenant": "acme",
            "x-tiermesh-sensitivity": "public",
            "x-tiermesh-task": task,
        }
        return send(self.listener, headers, json.dumps(body).encode())


def send(port: int, headers: dict[str, str], body: bytes) -> Answer:
    """POST ``body`` to the listener's chat completions; any status is an answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers=headers
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, found, text = int(response.status), response.headers, response.read()
    except urllib.error.HTTPError as exc:
        try:
            status, found, text = exc.code, exc.headers, exc.read()
        finally:
            exc.close()
    return Answer(
        status,
        found.get("x-tiermesh-tier"),
        found.get("x-tiermesh-backend"),
        text.decode(),
        time.monotonic() - started,
    )


@contextlib.contextmanager
def envoy_with(snapshot: Snapshot, workdir: Path) -> Iterator[tuple[EnvoyProcess, XdsThread]]:
    """A fresh Envoy for node ``NODE`` fed ``snapshot`` by its own ADS server."""
    xds = XdsThread()
    try:
        xds.set_snapshot(NODE, snapshot)
        spec = BootstrapSpec(
            node_id=NODE,
            xds_host="127.0.0.1",
            xds_port=xds.port,
            admin_port=free_port(),
            internal_listeners=True,  # the cloud key's egress listener is an internal one
        )
        workdir.mkdir(parents=True, exist_ok=True)
        with EnvoyProcess(render_bootstrap(spec), workdir=workdir, name=NODE) as envoy:
            envoy.wait_ready(timeout=20)
            yield envoy, xds
    finally:
        xds.close()


@pytest.fixture
def flow_mesh(tmp_path: Path, edge_server: LlamaServer) -> Iterator[FlowMesh]:
    cloud = CloudStandin(workdir=tmp_path / "cloud")
    cloud.start()
    try:
        with running_authz(tmp_path / "decisions") as authz:
            catalog = flow_catalog(edge_server.port, cloud.port)
            plan = evaluate_plan(catalog)
            listener = free_port()
            settings = NodeSettings(
                app_port=listener,
                authz=authz_settings(authz),
                credentials={KEY_NAME: cloud.api_key},
            )
            model = MeshModel.build([plan], {NODE: settings})
            with envoy_with(compile_snapshot(model, NODE), tmp_path / "envoy") as (envoy, xds):
                mesh = FlowMesh(
                    edge_server,
                    cloud,
                    plan,
                    listener,
                    envoy,
                    lambda snapshot: xds.set_snapshot(NODE, snapshot),
                    settings,
                )
                eventually(lambda: mesh.chat("reasoning").tier == "cloud", what="cloud answering")
                yield mesh
    finally:
        cloud.stop()
