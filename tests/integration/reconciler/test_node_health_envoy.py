"""A node's reported health, from its registration in a real etcd to a real Envoy's hosts.

The node's load report says ``healthy: false`` → the reconciler serves the endpoints of
the backends it hosts as UNHEALTHY → Envoy marks the host ``/failed_eds_health`` and
sends the chain's traffic to the next step, although the backend itself still answers
(and passes Envoy's own health check) → healthy again: back as before.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.compiler.conftest import NODE, Mesh, eventually, small_catalog
from tests.integration.compiler.tierbackend import TierBackend
from tests.support.authz import authz_settings, start_authz
from tests.support.xdsthread import XdsThread
from tests.unit.compiler.plans import evaluate_plan
from tests.unit.reconciler.policyfiles import rego_files
from tiermesh.controlplane.api import NodeLoad, RegisteredNode
from tiermesh.controlplane.model import NodeSettings
from tiermesh.controlplane.reconciler import Reconciler, ReconcileResult, default_compiler
from tiermesh.controlplane.store import EtcdStore, NodeLease
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port
from tiermesh.rego import RegorusEngine
from tiermesh.xds import BootstrapSpec, render_bootstrap

pytestmark = [pytest.mark.etcd, pytest.mark.envoy]

HOSTED = "edge"
"""The backend the small catalog places on node ``NODE`` (``node: edge-1``)."""
ROUTE = "acme.public.classify.*"
PUBLIC = {
    "x-tiermesh-tenant": "acme",
    "x-tiermesh-sensitivity": "public",
    "x-tiermesh-task": "classify",
}


def registration(app_port: int, *, healthy: bool, in_flight: int = 0) -> RegisteredNode:
    now = datetime.now(UTC)
    return RegisteredNode(
        node_id=NODE,
        tier="local",
        region="eu-west",
        residency=("eu",),
        app_port=app_port,
        spiffe_id=f"spiffe://tiermesh.test/node/{NODE}",
        registered_at=now,
        load=NodeLoad(in_flight=in_flight, healthy=healthy),
        load_at=now,
    )


@dataclass
class Plane:
    """etcd store, reconciler and ADS server on the XdsThread's loop; Envoy for ``NODE``."""

    xds: XdsThread
    store: EtcdStore
    reconciler: Reconciler
    lease: NodeLease
    mesh: Mesh

    def report(self, *, healthy: bool, in_flight: int = 0) -> ReconcileResult:
        """Write a load report into the node's registration; the reconcile that read it."""
        result: ReconcileResult = self.xds.run(self._report(healthy, in_flight))
        return result

    async def _report(self, healthy: bool, in_flight: int) -> ReconcileResult:
        before = self.reconciler.last_result
        number = before.number if before is not None else 0
        value = registration(self.mesh.listener, healthy=healthy, in_flight=in_flight)
        await self.store.update_node(self.lease, value)
        return await self.reconciler.wait_for(lambda r: r.number > number and r.events > 0)

    def health_flags(self, backend: str) -> str:
        """The ``health_flags`` Envoy's /clusters shows for the backend cluster's host."""
        for line in self.mesh.envoy.admin_text("/clusters").splitlines():
            if line.startswith(f"{backend}::") and "::health_flags::" in line:
                return line.rsplit("::", 1)[1]
        return ""


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture
def plane(etcd_server: EtcdServer, tmp_path: Path) -> Iterator[Plane]:
    backends = {name: TierBackend(name) for name in ("edge", "gpu", "cloud")}
    catalog = small_catalog({name: b.port for name, b in backends.items()})
    files = rego_files()
    files["data/catalog.yaml"] = json.dumps(catalog.model_dump(mode="json")).encode()
    listener = free_port()
    xds = XdsThread()
    authz = start_authz(tmp_path / "decisions")
    settings = NodeSettings(app_port=listener, authz=authz_settings(authz))

    async def start() -> tuple[EtcdStore, Reconciler, NodeLease]:
        store = EtcdStore(etcd_server.endpoint, root=f"/test-{uuid.uuid4().hex}/tiermesh/v1/")
        await store.connect()
        await store.push_bundle(files, expected_revision=0)
        lease = await store.register_node(NODE, registration(listener, healthy=True), ttl_s=30)
        compiler = default_compiler(lambda _node_id: settings)
        reconciler = Reconciler(store, RegorusEngine, compiler, xds.cache, debounce_s=0.05)
        await reconciler.start()
        first = await reconciler.wait_for(lambda r: r.bundle_revision == 1)
        assert first.ok, first.errors
        return store, reconciler, lease

    async def stop(store: EtcdStore, reconciler: Reconciler) -> None:
        await reconciler.aclose()
        await store.aclose()

    try:
        store, reconciler, lease = xds.run(start())
        try:
            spec = BootstrapSpec(
                node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=free_port()
            )
            with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE) as envoy:
                envoy.wait_ready(timeout=20)
                mesh = Mesh(backends, evaluate_plan(catalog), listener, envoy)
                eventually(lambda: mesh.request(PUBLIC).status == 200, what="routes served")
                yield Plane(xds, store, reconciler, lease, mesh)
        finally:
            xds.run(stop(store, reconciler))
    finally:
        xds.close()
        authz.close()
        for backend in backends.values():
            backend.stop()


def test_envoy_marks_the_host_of_an_unhealthy_node_and_fails_over(plane: Plane) -> None:
    chain = plane.mesh.chain(ROUTE)
    assert chain[0] == HOSTED
    assert len(chain) >= 2
    flags = eventually(lambda: plane.health_flags(HOSTED), what="edge host listed")
    assert "failed_eds_health" not in flags
    assert plane.mesh.request(PUBLIC).backend == HOSTED

    down = plane.report(healthy=False, in_flight=1)
    assert down.ok, down.errors
    assert (down.unhealthy, down.published) == ((NODE,), (NODE,))
    eventually(
        lambda: "/failed_eds_health" in plane.health_flags(HOSTED), what="host marked unhealthy"
    )
    # The backend still answers and passes its health check: only EDS took it out.
    assert [plane.mesh.request(PUBLIC).backend for _ in range(3)] == [chain[1]] * 3
    assert plane.health_flags(chain[1]) == "healthy"

    up = plane.report(healthy=True)
    assert up.ok, up.errors
    assert (up.unhealthy, up.published) == ((), (NODE,))
    eventually(lambda: plane.health_flags(HOSTED) == "healthy", what="host healthy again")
    assert plane.mesh.request(PUBLIC).backend == HOSTED
