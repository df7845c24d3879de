"""Policy as code end to end: ``tiermesh policy push`` to a real etcd, the reconciler
compiles and verifies, the ADS server pushes, a real Envoy routes to stand-in tiers."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration.compiler.conftest import Mesh, Reply, small_catalog
from tests.integration.compiler.tierbackend import TierBackend
from tests.support.authz import authz_settings, start_authz
from tiermesh.controlplane.api import NodeInfo
from tiermesh.controlplane.bundle import read_policy_dir
from tiermesh.controlplane.model import NodeSettings
from tiermesh.controlplane.reconciler import BUNDLE_PREFIX, Reconciler, default_compiler
from tiermesh.controlplane.store import EtcdStore
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port
from tiermesh.rego import RegorusEngine
from tiermesh.xds import AdsServer, BootstrapSpec, SnapshotCache, render_bootstrap, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy]
log = logging.getLogger(__name__)
SHIPPED = Path(__file__).parents[2] / "policies"
TIERMESH = str(Path(sys.executable).with_name("tiermesh"))
NODE = "edge-1"
ACME = {"x-tiermesh-tenant": "acme"}


# Wraps the honest plan and appends the cloud backend to every restricted chain.
LEAK_COMPACT = """package tiermesh.routing

compact_plan := object.union(_honest_compact, {"route_sets": _leaking_sets})

_leaking_sets[name] := [_leak(t) | some t in templates] if {
	some name, templates in _honest_compact.route_sets
}

_cloud_step := [id |
	some group in _honest_compact.steps
	some id, s in group
	s.backend == "cloud"
][0]

_leak(t) := object.union(t, {"chain": array.concat(t.chain, [_cloud_step])}) if {
	t.match.sensitivity == "restricted"
}

_leak(t) := t if t.match.sensitivity != "restricted"
"""
"""The shipped ``compact_plan`` (what the control plane compiles) with the cloud appended
to every restricted route's chain; ``plan``, its expansion, leaks the same way."""

LEAK_PLAN = """package tiermesh.routing

plan := object.union(_honest_plan, {"routes": [_leak(r) | some r in _honest_plan.routes]})

_cloud_step := [s | some r in _honest_plan.routes; some s in r.chain; s.backend == "cloud"][0]

_leak(r) := object.union(r, {"chain": array.concat(r.chain, [_cloud_step])}) if {
	r.match.sensitivity == "restricted"
}

_leak(r) := r if r.match.sensitivity != "restricted"
"""
"""A policy without ``compact_plan`` (the control plane then compiles ``plan``) whose plan
appends the cloud to every restricted route's chain."""


def write_policies(target: Path, ports: dict[str, int]) -> Path:
    """The shipped Rego with a catalog of stand-in tiers on loopback."""
    shutil.copytree(SHIPPED, target, ignore=shutil.ignore_patterns("catalog.yaml"))
    catalog = small_catalog(ports).model_dump(mode="json", exclude_none=True)
    (target / "data" / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    return target


def push(directory: Path, etcd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERMESH, "policy", "push", str(directory), "--etcd", etcd],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _holds(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except OSError:  # the listener is not there yet
        return False


async def until(check: Callable[[], bool], limit_s: float, what: str) -> float:
    """Poll ``check`` (blocking, run in a thread) until true; seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if await asyncio.to_thread(_holds, check):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {what} within {limit_s}s")


@dataclass
class Plane:
    etcd: EtcdServer
    reconciler: Reconciler
    mesh: Mesh
    policies: Path

    def answer(self, sensitivity: str | None, task: str = "classify") -> Reply:
        headers = {**ACME, "x-tiermesh-task": task}
        if sensitivity is not None:
            headers["x-tiermesh-sensitivity"] = sensitivity
        return self.mesh.request(headers)


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    backends = {name: TierBackend(name) for name in ("edge", "gpu", "cloud")}
    policies = write_policies(tmp_path / "policies", {n: b.port for n, b in backends.items()})
    listener = free_port()
    authz = await asyncio.to_thread(start_authz, tmp_path / "decisions")
    settings = NodeSettings(app_port=listener, authz=authz_settings(authz))
    try:
        with EtcdServer.for_tests() as etcd:
            async with EtcdStore(etcd.endpoint) as store:
                cache = SnapshotCache()
                server, port = await start_server(AdsServer(cache), "127.0.0.1:0")
                compiler = default_compiler(lambda _node: settings)
                node = NodeInfo(id=NODE, tier="local", region="eu-west", residency=("eu",))
                reconciler = Reconciler(
                    store, RegorusEngine, compiler, cache, static_nodes=[node], debounce_s=0.05
                )
                spec = BootstrapSpec(
                    node_id=NODE, xds_host="127.0.0.1", xds_port=port, admin_port=free_port()
                )
                envoy = EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE)
                try:
                    await reconciler.start()
                    envoy.start()
                    await asyncio.to_thread(envoy.wait_admin)
                    mesh = Mesh(backends, _no_plan(), listener, envoy)
                    yield Plane(etcd, reconciler, mesh, policies)
                finally:
                    await asyncio.to_thread(envoy.stop)
                    await reconciler.aclose()
                    await server.stop(grace=None)
                    for backend in backends.values():
                        backend.stop()
    finally:
        await asyncio.to_thread(authz.close)


async def _first_event(store: EtcdStore, after_revision: int) -> float:
    """When the watch delivers the first bundle write after ``after_revision``."""
    async with store.watch(BUNDLE_PREFIX, after_revision=after_revision) as events:
        async for _event in events:
            return time.monotonic()
    raise AssertionError("the bundle watch ended without an event")


def _no_plan() -> object:
    return None


async def test_push_routes_fails_over_and_refuses_a_leaking_bundle(plane: Plane) -> None:
    async def routed() -> float:
        await until(lambda: plane.answer("public").status == 200, 30, "Envoy routing")
        return time.monotonic()

    async with EtcdStore(plane.etcd.endpoint) as watcher:
        before = (await watcher.read_prefix(BUNDLE_PREFIX)).revision
        commit_seen = asyncio.create_task(_first_event(watcher, before))
        envoy_seen = asyncio.create_task(routed())
        started = time.monotonic()
        pushed = await asyncio.to_thread(push, plane.policies, plane.etcd.endpoint)
        assert pushed.returncode == 0, pushed.stderr
        commit_at, routed_at = await commit_seen, await envoy_seen

    assert "revision 1" in pushed.stdout + pushed.stderr
    log.info(
        "policy push: check + CAS commit %.2f s after start; commit → Envoy routing %.0f ms",
        commit_at - started,
        1e3 * (routed_at - commit_at),
    )
    assert routed_at - commit_at < 5

    # Each sensitivity lands where the plan puts it: the edge box first.
    for sensitivity in ("public", "internal", "restricted", None):
        reply = plane.answer(sensitivity)
        assert (reply.status, reply.backend, reply.tier) == (200, "edge", "local"), sensitivity

    # The first tier dies: traffic moves down the chain; restricted only to the cleared GPU.
    plane.mesh.backends["edge"].stop()
    assert plane.answer("public").backend in {"gpu", "cloud"}
    assert plane.answer("restricted").backend == "gpu"
    assert plane.answer(None).backend == "gpu"

    # Every tier cleared for restricted data is down: 503, never the cloud.
    plane.mesh.backends["gpu"].stop()
    cloud_requests = len(plane.mesh.backends["cloud"].models)
    for sensitivity in ("restricted", None):
        assert plane.answer(sensitivity).status == 503
    assert len(plane.mesh.backends["cloud"].models) == cloud_requests
    assert plane.answer("public").backend == "cloud"

    # Bundles that would send restricted data to the cloud, written straight to etcd
    # (bypassing `policy push`'s own check): the reconciler's verifier refuses each, and
    # the bundle served before stays served. First through compact_plan (what the
    # control plane compiles), then through plan in a policy without compact_plan.
    routing = plane.policies / "routing" / "routing.rego"
    honest = routing.read_text()
    assert "\ncompact_plan := {" in honest
    assert "\nplan := " in honest
    without_compact = honest.replace("compact_plan", "_compact")
    variants = (
        (honest.replace("\ncompact_plan := {", "\n_honest_compact := {", 1), LEAK_COMPACT),
        (without_compact.replace("\nplan := ", "\n_honest_plan := ", 1), LEAK_PLAN),
    )
    for revision, (routing_text, leak) in enumerate(variants, start=2):
        routing.write_text(routing_text)
        (plane.policies / "routing" / "leak.rego").write_text(leak)
        leaking = read_policy_dir(plane.policies)
        async with EtcdStore(plane.etcd.endpoint) as store:
            await store.push_bundle(leaking.files, expected_revision=revision - 1)
        try:
            refused = await plane.reconciler.wait_for(
                lambda r, revision=revision: not r.ok and r.bundle_revision == revision,
                timeout_s=10,
            )
        except TimeoutError:
            raise AssertionError(f"last result: {plane.reconciler.last_result}") from None
        error = " ".join(str(finding) for finding in refused.errors)
        log.info("leaking bundle refused: %s", error)
        assert "restricted" in error
        assert "'cloud'" in error
        assert plane.reconciler.bundle_revision == 1
        for sensitivity in ("restricted", None):
            assert plane.answer(sensitivity).status == 503
        assert len(plane.mesh.backends["cloud"].models) == cloud_requests + 1
