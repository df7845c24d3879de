"""A small catalog served by test backends on loopback, compiled and pushed to a real Envoy
that runs the real request policy (ext_authz) in front of its routes."""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.integration.compiler.tierbackend import TierBackend
from tests.support.authz import authz_settings, running_authz
from tests.support.xdsthread import XdsThread
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import MeshModel, NodeSettings
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, render_bootstrap

NODE = "edge-1"
HEDGE_MS = 400
T = TypeVar("T")


def _tier_defaults(timeout_ms: int) -> dict[str, Any]:
    return {
        "timeout_ms": timeout_ms,
        "first_byte_timeout_ms": HEDGE_MS,
        "retries": {"count": 0, "backoff_base_ms": 10, "backoff_max_ms": 50},
        "circuit_breaker": {
            "max_connections": 16,
            "max_pending": 16,
            "max_requests": 16,
            "max_retries": 8,
        },
        "outlier_detection": {
            "consecutive_5xx": 50,
            "interval_ms": 60000,
            "base_ejection_ms": 1000,
            "max_ejection_percent": 100,
        },
        # Long interval: failover must come from retries, not from the health checker.
        "health_check": {
            "interval_ms": 60000,
            "timeout_ms": 1000,
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
        },
    }


def small_catalog(ports: dict[str, int], tenants: tuple[dict[str, Any], ...] = ()) -> Catalog:
    """One backend per tier (``edge`` local, ``gpu`` private cleared for restricted,
    ``cloud``), one EU tenant ``acme`` whose restricted data may use local and private,
    plus ``tenants`` (each ``name`` and fields over acme's; one named ``acme`` changes
    acme)."""
    base: dict[str, Any] = {
        "name": "acme",
        "residency": ["eu"],
        "monthly_budget_usd": 100,
        "allowed_tiers": ["local", "private", "cloud"],
        "restricted_tiers": ["local", "private"],
    }
    named = {tenant["name"]: tenant for tenant in tenants}

    def backend(name: str, tier: str, complexity: int, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "tier": tier,
            "region": "eu-west",
            "residency": "eu",
            "cost_per_1k_tokens": {"input": 0, "output": 0},
            "capacity": 16,
            "models": [f"{name}-model"],
            "max_complexity": complexity,
            "endpoint": {"host": "127.0.0.1", "port": ports[name]},
            "health_check": "/health",
            **extra,
        }

    return Catalog.model_validate(
        {
            "defaults": {
                "tiers": {t: _tier_defaults(3000) for t in ("local", "private", "cloud")},
                "default_task": "classify",
            },
            "backends": [
                backend("edge", "local", 1, node=NODE),
                backend("gpu", "private", 3, max_sensitivity="restricted"),
                backend("cloud", "cloud", 5),
            ],
            "tenants": [
                {**base, **named.pop("acme", {})},
                *({**base, **tenant} for tenant in named.values()),
            ],
            "aliases": [{"name": "fast", "models": ["edge-model", "gpu-model"]}],
            "tasks": [
                {"name": "classify", "complexity": 1},
                {"name": "reasoning", "complexity": 4},
            ],
        }
    )


@dataclass
class Reply:
    status: int
    backend: str | None
    tier: str | None
    body: str
    elapsed_s: float


@dataclass
class Mesh:
    """Backends, the evaluated plan and the listener of a running Envoy."""

    backends: dict[str, TierBackend]
    plan: Plan
    listener: int
    envoy: EnvoyProcess
    sent: list[Reply] = field(default_factory=list)

    def chain(self, route: str) -> list[str]:
        """Backends of plan route ``route``, in chain order."""
        (match,) = [r for r in self.plan.routes if r.name == route]
        return [step.backend for step in match.chain]

    def request(self, headers: dict[str, str], path: str = "/v1/chat/completions") -> Reply:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.listener}{path}",
            data=b"{}",
            headers={"content-type": "application/json", **headers},
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                reply = Reply(
                    int(response.status),
                    response.headers.get("x-tiermesh-backend"),
                    response.headers.get("x-tiermesh-tier"),
                    response.read().decode(),
                    time.monotonic() - started,
                )
        except urllib.error.HTTPError as exc:
            try:
                reply = Reply(
                    exc.code,
                    exc.headers.get("x-tiermesh-backend"),
                    exc.headers.get("x-tiermesh-tier"),
                    exc.read().decode(),
                    time.monotonic() - started,
                )
            finally:
                exc.close()
        self.sent.append(reply)
        return reply


def eventually(check: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not {what or 'true'} within {timeout}s (last error: {last})")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with serving(tmp_path) as mesh:
        yield mesh


@contextlib.contextmanager
def serving(
    tmp_path: Path, tenants: tuple[dict[str, Any], ...] = (), probe_tenant: str = "acme"
) -> Iterator[Mesh]:
    """A running Envoy serving :func:`small_catalog` with ``tenants``; ready once a request
    of ``probe_tenant`` is answered."""
    backends = {name: TierBackend(name) for name in ("edge", "gpu", "cloud")}
    xds = XdsThread()
    try:
        with running_authz(tmp_path / "decisions") as authz:
            catalog = small_catalog({name: b.port for name, b in backends.items()}, tenants)
            plan = evaluate_plan(catalog)
            listener = free_port()
            settings = NodeSettings(app_port=listener, authz=authz_settings(authz))
            model = MeshModel.build([plan], {NODE: settings})
            xds.set_snapshot(NODE, compile_snapshot(model, NODE))
            spec = BootstrapSpec(
                node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=free_port()
            )
            with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE) as envoy:
                envoy.wait_ready(timeout=20)
                mesh = Mesh(backends, plan, listener, envoy)
                probe = {"x-tiermesh-tenant": probe_tenant, "x-tiermesh-sensitivity": "public"}
                eventually(lambda: mesh.request(probe).status == 200, what="routes served")
                for backend in backends.values():
                    backend.models.clear()
                yield mesh
    finally:
        xds.close()
        for backend in backends.values():
            backend.stop()
