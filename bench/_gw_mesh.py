"""The tiermesh path of ``gateway_overhead.py``: a real plan compiled into a real Envoy.

The same pieces as ``tests/integration/compiler/conftest.py`` (and ``tiermesh up``): a
catalog of two backends, the routing policy (Rego, regorus) evaluated into a plan for
node ``edge-1``, ``MeshModel.build`` → ``compile_route_only`` (the compiled config less
its ext_authz filter: the route-only path) → an ADS server on its own event-loop thread
→ ``EnvoyProcess`` (``--concurrency 1``, as the agent runs it).

For public traffic of tenant ``bench`` the plan's route has a two-step chain,
``primary`` (tier local) → ``secondary`` (tier private): an aggregate cluster, the
chain's retry policy (``previous_priorities``), per-try first-byte deadline, circuit
breakers, outlier detection and active health checks exactly as compiled.

With ``catalog=demo_catalog_at(A, B)`` and the edge path's headers, the same Envoy holds
the route table the edge path compiles (the demo catalog: 216 routes), still without
ext_authz: the compiled route alone at the shipped table's size.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml
from google.protobuf import json_format

from _gw_owned import Owned
from _route_only import compile_route_only
from tiermesh.controlplane.api import PLAN_PATH, Catalog, Plan, policy_data
from tiermesh.controlplane.model import MeshModel, NodeSettings
from tiermesh.demo.catalog import EDGE_BACKEND, PRIVATE_BACKEND, DemoEndpoint, demo_catalog
from tiermesh.demo.edge_target import peer_catalog
from tiermesh.procs.envoy import EnvoyProcess, envoy_binary
from tiermesh.procs.ports import free_port
from tiermesh.rego import RegorusEngine
from tiermesh.xds import (
    AdsServer,
    BootstrapSpec,
    Snapshot,
    SnapshotCache,
    render_bootstrap,
    start_server,
    typeurls,
)

NODE = "edge-1"
TENANT = "bench"
MODEL = "bench-model"
HEADERS = {
    "x-tiermesh-tenant": TENANT,
    "x-tiermesh-sensitivity": "public",
    "x-tiermesh-task": "chat",
}
"""Request headers of the measured traffic: public chat of tenant ``bench``."""

REPO = Path(__file__).resolve().parents[1]
POLICY_DIR = REPO / "policies"
T = TypeVar("T")

RETRIES: dict[str, Any] = {
    "count": 1,
    "backoff_base_ms": 25,
    "backoff_max_ms": 250,
    "retry_on": ["connect-failure", "refused-stream", "reset", "5xx"],
}
"""Per step: one retry on the same backend, then the next step."""

RESILIENCE: dict[str, Any] = {
    "timeout_ms": 30000,
    "first_byte_timeout_ms": 2000,
    "retries": RETRIES,
    "circuit_breaker": {
        "max_connections": 256,
        "max_pending": 256,
        "max_requests": 256,
        "max_retries": 64,
    },
    "outlier_detection": {
        "consecutive_5xx": 5,
        "interval_ms": 1000,
        "base_ejection_ms": 30000,
        "max_ejection_percent": 100,
    },
    "health_check": {
        "interval_ms": 1000,
        "timeout_ms": 500,
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
    },
}
"""The same resilience for both tiers (a realistic, not a tuned-for-speed, profile)."""


def bench_catalog(primary_port: int, secondary_port: int) -> Catalog:
    """Two backends serving ``bench-model``: ``primary`` (local, on ``edge-1``) and
    ``secondary`` (private), one EU tenant allowed both, no rate limit."""

    def backend(name: str, tier: str, port: int, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "tier": tier,
            "region": "eu-west",
            "residency": "eu",
            "cost_per_1k_tokens": {"input": 0, "output": 0},
            "capacity": 256,
            "models": [MODEL],
            "max_complexity": 5,
            "endpoint": {"host": "127.0.0.1", "port": port},
            "health_check": "/v1/models",
            **extra,
        }

    return Catalog.model_validate(
        {
            "defaults": {
                "tiers": dict.fromkeys(("local", "private", "cloud"), RESILIENCE),
                "default_task": "chat",
            },
            "backends": [
                backend("primary", "local", primary_port, node=NODE),
                backend("secondary", "private", secondary_port),
            ],
            "tenants": [
                {
                    "name": TENANT,
                    "residency": ["eu"],
                    "monthly_budget_usd": 1000,
                    "allowed_tiers": ["local", "private", "cloud"],
                }
            ],
            "tasks": [{"name": "chat", "complexity": 1}],
        }
    )


def evaluate_plan(catalog: Catalog) -> Plan:
    """The plan the routing policy under ``policies/`` makes for node ``edge-1``."""
    modules = {
        f"policies/{path.relative_to(POLICY_DIR)}": path.read_text(encoding="utf-8")
        for path in sorted(POLICY_DIR.rglob("*.rego"))
        if not path.name.endswith("_test.rego")
    }
    node: dict[str, Any] = {"id": NODE, "tier": "local", "region": "eu-west", "residency": ["eu"]}
    engine = RegorusEngine()
    try:
        engine.load(modules, policy_data(catalog, None))
        return Plan.model_validate(engine.evaluate(PLAN_PATH, {"node": node}))
    finally:
        engine.close()


def demo_catalog_at(primary_port: int, secondary_port: int) -> Catalog:
    """The catalog the edge path (``peer_target.py``) compiles, its on-box backends at
    ``primary_port`` (``edge-smollm``) and ``secondary_port`` (``onprem-gpu``): the
    shipped demo catalog with :func:`~tiermesh.demo.edge_target.peer_catalog`'s changes.
    Its cloud backends stay where the shipped catalog puts them (plain HTTP, no
    credential): no request of the benchmark reaches them while A or B answers."""
    shipped = yaml.safe_load((POLICY_DIR / "data" / "catalog.yaml").read_text())
    endpoints = {
        EDGE_BACKEND: DemoEndpoint(primary_port, node=NODE),
        PRIVATE_BACKEND: DemoEndpoint(secondary_port),
    }
    return Catalog.model_validate(peer_catalog(demo_catalog(shipped, endpoints)))


def public_chain(plan: Plan, headers: dict[str, str]) -> list[str]:
    """Backends of the route that ``headers``' traffic (any model) takes, in order."""
    tenant = headers["x-tiermesh-tenant"]
    task = headers.get("x-tiermesh-task", "chat")
    sensitivity = headers.get("x-tiermesh-sensitivity", "public")
    for route in plan.routes:
        match = route.match
        if (
            match.tenant == tenant
            and match.sensitivity in (sensitivity, "*")
            and match.task in (task, "*")
            and match.model == "*"
        ):
            return [step.backend for step in route.chain]
    raise RuntimeError(f"no plan route for {headers}: {plan.routes}")


def envoy_version() -> str:
    done = subprocess.run(
        [str(envoy_binary()), "--version"], capture_output=True, text=True, timeout=20, check=False
    )
    text = done.stdout.strip().split("version:")[-1].strip()
    return text.split("/")[1] if text.count("/") >= 1 else text


class _AdsThread:
    """Snapshot cache + ADS server on a background event loop (safe from any thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cache: SnapshotCache = self._call(SnapshotCache)
        self.ads: AdsServer = self._call(lambda: AdsServer(self.cache))
        self.server: grpc.aio.Server
        self.server, self.port = self._run(start_server(self.ads, "127.0.0.1:0"))

    def _call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        result: T = self._run(run())
        return result

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def set_snapshot(self, node: str, snapshot: Snapshot) -> None:
        self._call(lambda: self.cache.set_snapshot(node, snapshot))

    def close(self) -> None:
        self._run(self.server.stop(grace=None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class TiermeshPath(Owned):
    """Plan → snapshot → ADS → Envoy for two upstream ports; owns the ADS thread, Envoy
    (stopped by PID) and a temp dir. ``port`` is the app listener. ``catalog`` defaults to
    :func:`bench_catalog`, ``headers`` (the measured traffic) to :data:`HEADERS`. Not
    thread-safe."""

    def __init__(
        self,
        primary_port: int,
        secondary_port: int,
        catalog: Catalog | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.catalog = catalog or bench_catalog(primary_port, secondary_port)
        self.headers = headers or HEADERS
        self.plan = evaluate_plan(self.catalog)
        self.chain = public_chain(self.plan, self.headers)
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="tiermesh-gw-envoy-"))
        self._ads: _AdsThread | None = None
        self.envoy: EnvoyProcess | None = None

    def start(self, timeout: float = 20.0) -> None:
        self._ads = _AdsThread()
        model = MeshModel.build([self.plan], {NODE: NodeSettings(app_port=self.port)})
        # The route-only path this benchmark measures: the compiled config without ext_authz.
        self.snapshot = compile_route_only(model, NODE)
        self._ads.set_snapshot(NODE, self.snapshot)
        spec = BootstrapSpec(
            node_id=NODE, xds_host="127.0.0.1", xds_port=self._ads.port, admin_port=free_port()
        )
        self.envoy = EnvoyProcess(render_bootstrap(spec), workdir=self._dir, name=NODE)
        self.envoy.start()
        self.envoy.wait_ready(timeout=timeout)
        self.wait_served_by("local", timeout)

    def wait_served_by(self, tier: str, timeout: float) -> None:
        """Wait until a request through the listener is answered by a backend of ``tier``."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/v1/chat/completions",
                data=b'{"model":"bench-model","messages":[]}',
                headers={"content-type": "application/json", **self.headers},
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    last = f"{response.status} tier={response.headers.get('x-tiermesh-tier')}"
                    if response.headers.get("x-tiermesh-tier") == tier:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise RuntimeError(f"Envoy route not served by tier {tier} in {timeout}s: {last}")

    def route_count(self) -> int:
        """Routes in the plan compiled into this Envoy."""
        return len(self.plan.routes)

    def route_summary(self) -> dict[str, Any]:
        """What the compiled route and clusters say (for the report)."""
        snapshot = self.snapshot
        found: dict[str, Any] = {}
        for name in snapshot.names(typeurls.ROUTE):
            config: Any = snapshot.resource(typeurls.ROUTE, name)
            for vhost in config.virtual_hosts:
                for route in vhost.routes:
                    action = json_format.MessageToDict(route.route)
                    if action.get("cluster", "").startswith("chain"):
                        found["route"] = route.name
                        found["cluster"] = action["cluster"]
                        found["timeout"] = action.get("timeout")
                        policy = action.get("retryPolicy", {})
                        found["retry_on"] = policy.get("retryOn")
                        found["num_retries"] = policy.get("numRetries")
                        found["per_try_timeout"] = policy.get("perTryTimeout")
                        found["retry_priority"] = policy.get("retryPriority", {}).get("name")
                        break
        for name in snapshot.names(typeurls.CLUSTER):
            cluster: Any = snapshot.resource(typeurls.CLUSTER, name)
            if name == "primary":
                breaker = json_format.MessageToDict(cluster.circuit_breakers)
                found["circuit_breaker"] = breaker.get("thresholds", [{}])[0]
                found["outlier_detection"] = json_format.MessageToDict(cluster.outlier_detection)
        return found

    def close(self) -> None:
        try:
            if self.envoy is not None:
                self.envoy.stop()
        finally:
            if self._ads is not None:
                self._ads.close()
            shutil.rmtree(self._dir, ignore_errors=True)
