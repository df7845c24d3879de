"""Whom a node's inbound mTLS listener admits: the nodes whose plans call it (a backend
pinned to its SPIFFE ID over TLS), never a cloud-tier node, narrowed from the registry's
candidates; a plan change that adds or removes a caller pushes the callee again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from tests.unit.compiler.plans import TEST_AUTHZ, TEST_BUNDLE, demo_catalog, evaluate_plan
from tests.unit.reconciler.policyfiles import SMALL_CATALOG, node_registration, policy_files
from tiermesh.controlplane.api import Endpoint, Plan, Tier
from tiermesh.controlplane.generators.mesh_tls import MESH_LISTENER
from tiermesh.controlplane.model import (
    MeshTlsSettings,
    NodeSettings,
    admitted_peers,
    plan_callers,
    plan_probe_paths,
)
from tiermesh.controlplane.reconciler import CompileCache, Reconciler, default_compiler
from tiermesh.controlplane.store import MemoryStore
from tiermesh.rego import RegorusEngine
from tiermesh.xds import SnapshotCache, typeurls

TD = "mesh.test"


def sid(node_id: str) -> str:
    return f"spiffe://{TD}/node/{node_id}"


GPU = sid("gpu-1")


def plan_of(node_id: str, tier: Tier, *, pinned: str | None, tls: bool = True) -> Plan:
    """The demo catalog's plan, made for ``node_id``, with its first backend only, pinned
    to ``pinned`` (or to nothing)."""
    base = evaluate_plan(demo_catalog())
    first = base.backends[0]
    endpoint = Endpoint(host="10.0.0.9", port=8443, tls=tls)
    backend = first.model_copy(update={"spiffe_id": pinned, "endpoint": endpoint})
    node = base.node.model_copy(update={"id": node_id, "tier": tier})
    return base.model_copy(update={"node": node, "backends": (backend,)})


def test_a_node_calls_the_nodes_its_plan_pins_a_backend_to() -> None:
    plans = [
        plan_of("edge-1", "local", pinned=GPU),
        plan_of("edge-2", "local", pinned=GPU),
        plan_of("gpu-1", "private", pinned=None),
        plan_of("edge-3", "local", pinned=sid("other-1")),
    ]
    callers = plan_callers(plans)
    assert dict(callers) == {GPU: {"edge-1", "edge-2"}, sid("other-1"): {"edge-3"}}


def test_a_cloud_node_is_never_a_caller_whatever_its_plan() -> None:
    callers = plan_callers([plan_of("cloud-gw-1", "cloud", pinned=GPU)])
    assert dict(callers) == {}


def test_a_backend_pinned_without_tls_makes_no_caller() -> None:
    assert dict(plan_callers([plan_of("edge-1", "local", pinned=GPU, tls=False)])) == {}


def test_plans_sharing_their_backends_are_walked_once_and_stay_apart() -> None:
    edge = plan_of("edge-1", "local", pinned=GPU)
    twin = edge.model_copy(update={"node": edge.node.model_copy(update={"id": "edge-2"})})
    assert twin.backends is edge.backends
    assert dict(plan_callers([edge, twin])) == {GPU: {"edge-1", "edge-2"}}


def test_admitted_peers_are_the_candidates_that_call() -> None:
    candidates = (
        sid("cloud-gw-1"),
        sid("edge-1"),
        sid("edge-2"),
        sid("gpu-1"),
        "spiffe://x/node/edge-1",
    )
    callers = {GPU: frozenset({"edge-1", "gpu-1", "cloud-gw-9"})}
    assert admitted_peers(candidates, "gpu-1", TD, callers) == (sid("edge-1"),)
    assert admitted_peers(candidates, "edge-1", TD, callers) == ()


# -- through the reconciler: plans first, then callers, then settings -----------------

PINNED_CATALOG = SMALL_CATALOG.replace(
    "    endpoint: {host: 127.0.0.1, port: 9001}\n",
    f"    endpoint: {{host: 10.0.0.9, port: 8443, tls: true}}\n    spiffe_id: {GPU}\n",
    1,
)
NODES: dict[str, str] = {
    "edge-1": "local",
    "gpu-1": "private",
    "cloud-gw-1": "cloud",
}
CANDIDATES = (sid("cloud-gw-1"), sid("edge-1"), sid("edge-9"))
"""What the registry would allow gpu-1 at most, here wider than it ever is (a cloud node
and an edge node without a plan), so that the plans alone must narrow it."""


def settings_for(node_id: str) -> NodeSettings:
    mesh = None
    if node_id == "gpu-1":
        mesh = MeshTlsSettings(
            inbound_port=8443, model_port=8081, trust_domain=TD, allowed_peers=CANDIDATES
        )
    return NodeSettings(app_port=10000, authz=TEST_AUTHZ, trust_bundle_pem=TEST_BUNDLE, mesh=mesh)


def admitted(cache: SnapshotCache, node_id: str) -> list[str] | None:
    """The exact URI SANs ``node_id``'s mesh listener admits; None without one."""
    snapshot = cache.get_snapshot(node_id)
    assert snapshot is not None
    if MESH_LISTENER not in snapshot.ordered_names(typeurls.LISTENER):
        return None
    listener = snapshot.resource(typeurls.LISTENER, MESH_LISTENER)
    (chain,) = listener.filter_chains  # type: ignore[attr-defined]
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    manager = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(manager)
    assert manager.http_filters[0].name == "envoy.filters.http.ext_authz"
    validation = context.common_tls_context.combined_validation_context
    return [
        m.matcher.exact for m in validation.default_validation_context.match_typed_subject_alt_names
    ]


@pytest.fixture
async def mesh() -> AsyncIterator[tuple[MemoryStore, SnapshotCache, Reconciler]]:
    store, cache = MemoryStore(), SnapshotCache()
    compiler = default_compiler(settings_for, cache=CompileCache())
    reconciler = Reconciler(store, RegorusEngine, compiler, cache, debounce_s=0.01)
    for node_id, tier in NODES.items():
        await store.register_node(node_id, node_registration(node_id, tier), ttl_s=30)
    await reconciler.start()
    try:
        yield store, cache, reconciler
    finally:
        await reconciler.aclose()
        await store.aclose()


async def test_a_plan_change_adds_and_removes_the_callee_listener(
    mesh: tuple[MemoryStore, SnapshotCache, Reconciler],
) -> None:
    store, cache, reconciler = mesh
    await store.push_bundle(policy_files(SMALL_CATALOG, nodes=None), expected_revision=0)
    first = await reconciler.wait_for(lambda r: r.bundle_revision == 1)
    assert first.ok, first.errors
    # Nobody's plan pins a backend to gpu-1: no inbound listener at all.
    assert admitted(cache, "gpu-1") is None
    before = reconciler.published["gpu-1"]

    await store.push_bundle(policy_files(PINNED_CATALOG, nodes=None), expected_revision=1)
    second = await reconciler.wait_for(lambda r: r.bundle_revision == 2)
    assert second.ok, second.errors
    assert "gpu-1" in second.published
    assert reconciler.published["gpu-1"] != before
    # edge-1's plan calls gpu-1; the cloud gateway's plan may too, but it is never
    # admitted; edge-9 has no plan; gpu-1 never admits itself.
    assert admitted(cache, "gpu-1") == [sid("edge-1")]
    assert admitted(cache, "edge-1") is None

    await store.push_bundle(policy_files(SMALL_CATALOG, nodes=None), expected_revision=2)
    third = await reconciler.wait_for(lambda r: r.bundle_revision == 3)
    assert third.ok, third.errors
    assert "gpu-1" in third.published
    assert admitted(cache, "gpu-1") is None


async def test_an_unbound_compiler_admits_no_peer() -> None:
    plan = evaluate_plan(demo_catalog(), {"id": "gpu-1", "tier": "private", "region": "eu-west"})
    compiler = default_compiler(settings_for, cache=CompileCache(0))
    assert compiler.settings_for("gpu-1").mesh.allowed_peers == ()  # type: ignore[union-attr]
    bound = compiler.with_plans({"edge-1": plan_of("edge-1", "local", pinned=GPU), "gpu-1": plan})
    assert bound.settings_for("gpu-1").mesh.allowed_peers == (sid("edge-1"),)  # type: ignore[union-attr]
    # Binding unhealthy nodes keeps the plans' callers.
    again = bound.with_unhealthy_nodes({"edge-1"})
    assert again.settings_for("gpu-1").mesh.allowed_peers == (sid("edge-1"),)  # type: ignore[union-attr]


def test_probe_paths_are_the_health_checks_the_callers_plans_run() -> None:
    edge = plan_of("edge-1", "local", pinned=GPU)
    path = edge.backends[0].health_check.path
    cloud = plan_of("cloud-gw-1", "cloud", pinned=GPU)
    assert dict(plan_probe_paths([edge, cloud])) == {GPU: {path}}
    compiler = default_compiler(settings_for, cache=CompileCache(0))
    gpu = plan_of("gpu-1", "private", pinned=None)
    mesh = compiler.with_plans({"edge-1": edge, "gpu-1": gpu}).settings_for("gpu-1").mesh
    assert mesh is not None
    assert (mesh.allowed_peers, mesh.probe_paths) == ((sid("edge-1"),), (path,))
    # Without a caller there is neither a peer nor a probe.
    alone = compiler.with_plans({"gpu-1": gpu}).settings_for("gpu-1").mesh
    assert alone is not None
    assert (alone.allowed_peers, alone.probe_paths) == ((), ())
