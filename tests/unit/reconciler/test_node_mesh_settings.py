"""Node-to-node mTLS settings from a registration's ``mesh_host``/``mesh_port`` and the
other registrations (NodeDirectory): where the inbound listener binds, whom it admits."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from tests.unit.compiler.plans import TEST_BUNDLE, demo_catalog, evaluate_plan
from tiermesh.controlplane.api import NodeEndpoint, RegisteredNode
from tiermesh.controlplane.generators.mesh_tls import mesh_clusters, mesh_listeners
from tiermesh.controlplane.model import MeshTlsSettings, NodeModel, NodeSettings
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.store.memory import MemoryStore

TD = "mesh.test"


def compiled(settings: NodeSettings) -> NodeModel:
    """A node model with ``settings`` (the mesh generators read only the settings)."""
    return NodeModel.build(
        evaluate_plan(demo_catalog()), replace(settings, trust_bundle_pem=TEST_BUNDLE)
    )


def registered(**fields: object) -> bytes:
    base: dict[str, object] = {
        "node_id": "gpu-1",
        "tier": "private",
        "region": "eu",
        "app_port": 10000,
        "endpoints": (NodeEndpoint(name="gpu-1.llama", host="0.0.0.0", port=8081),),
        "spiffe_id": f"spiffe://{TD}/node/gpu-1",
        "registered_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    return RegisteredNode.model_validate({**base, **fields}).model_dump_json().encode()


async def settings(value: bytes, trust_domain: str | None = TD) -> MeshTlsSettings | None:
    store = MemoryStore()
    await store.register_node("gpu-1", value, ttl_s=60)
    directory = NodeDirectory(store, "", trust_domain=trust_domain)
    await directory.start()
    try:
        return (await asyncio.to_thread(directory.settings_for, "gpu-1")).mesh
    finally:
        await directory.aclose()


async def test_mesh_port_compiles_an_inbound_listener_to_the_model_server() -> None:
    mesh = await settings(registered(mesh_port=8443, mesh_host="10.0.0.5"))
    assert mesh == MeshTlsSettings(
        inbound_port=8443,
        inbound_address="10.0.0.5",
        model_port=8081,
        trust_domain=TD,
        model_host="127.0.0.1",
    )
    assert mesh.allowed_peers == ()
    assert (mesh.sds_cluster, mesh.svid_secret, mesh.bundle_secret) == (
        "tiermesh_sds", "tiermesh_svid", "tiermesh_trust_bundle",
    )  # fmt: skip


async def test_a_port_only_registration_binds_every_address() -> None:
    """Agents older than ``mesh_host`` registered the port alone; that meant 0.0.0.0."""
    mesh = await settings(registered(mesh_port=8443))
    assert mesh is not None
    assert (mesh.inbound_address, mesh.inbound_port) == ("0.0.0.0", 8443)


async def test_a_specific_model_address_is_kept() -> None:
    model = NodeEndpoint(name="gpu-1.llama", host="10.0.0.7", port=8081)
    mesh = await settings(registered(mesh_port=8443, endpoints=(model,)))
    assert mesh is not None
    assert mesh.model_host == "10.0.0.7"


async def test_no_mesh_without_port_model_server_or_trust_domain() -> None:
    assert await settings(registered()) is None
    assert await settings(registered(mesh_port=8443, endpoints=())) is None
    assert await settings(registered(mesh_port=8443), trust_domain=None) is None


async def test_a_moved_mesh_port_triggers_a_recompile() -> None:
    store = MemoryStore()
    lease = await store.register_node("gpu-1", registered(mesh_port=8443), ttl_s=60)
    changed = asyncio.Event()
    directory = NodeDirectory(store, "", trust_domain=TD, on_settings_changed=changed.set)
    await directory.start()
    try:
        await store.update_node(lease, registered(mesh_port=9443))
        await asyncio.wait_for(changed.wait(), 5)
    finally:
        await directory.aclose()


async def test_a_named_callback_hears_which_node_changed() -> None:
    store = MemoryStore()
    lease = await store.register_node("gpu-1", registered(mesh_port=8443), ttl_s=60)
    named: asyncio.Queue[str] = asyncio.Queue()
    everything = asyncio.Event()
    directory = NodeDirectory(
        store,
        "",
        trust_domain=TD,
        on_settings_changed=everything.set,
        on_node_settings_changed=named.put_nowait,
    )
    await directory.start()
    try:
        await store.update_node(lease, registered(mesh_port=9443))
        assert await asyncio.wait_for(named.get(), 5) == "gpu-1"
        # A node joining changes whom mesh listeners may admit: named too.
        await store.register_node("edge-7", other("edge-7", "local"), ttl_s=60)
        assert await asyncio.wait_for(named.get(), 5) == "edge-7"
        assert not everything.is_set()
    finally:
        await directory.aclose()


def other(node_id: str, tier: str) -> bytes:
    return registered(
        node_id=node_id,
        tier=tier,
        endpoints=(),
        spiffe_id=f"spiffe://{TD}/node/{node_id}",
    )


async def directory_with(*others: tuple[str, str]) -> tuple[MemoryStore, NodeDirectory]:
    store = MemoryStore()
    await store.register_node("gpu-1", registered(mesh_port=8443, mesh_host="10.0.0.5"), ttl_s=60)
    for node_id, tier in others:
        await store.register_node(node_id, other(node_id, tier), ttl_s=60)
    directory = NodeDirectory(store, "", trust_domain=TD)
    await directory.start()
    return store, directory


async def test_the_listener_admits_exactly_the_other_non_cloud_nodes() -> None:
    _, directory = await directory_with(
        ("edge-1", "local"), ("private-2", "private"), ("cloud-gw-1", "cloud")
    )
    try:
        settings = await asyncio.to_thread(directory.settings_for, "gpu-1")
    finally:
        await directory.aclose()
    assert settings.mesh is not None
    assert settings.mesh.allowed_peers == (
        f"spiffe://{TD}/node/edge-1", f"spiffe://{TD}/node/private-2",
    )  # fmt: skip

    # Compiled: exact URI SAN matchers of those IDs and nothing else (no prefix, so no
    # other SVID of the trust domain, the cloud gateway's least of all).
    node = compiled(settings)
    (listener,) = mesh_listeners(node)
    bound = listener.address.socket_address
    assert (bound.address, bound.port_value) == ("10.0.0.5", 8443)
    context = tls_pb2.DownstreamTlsContext()
    listener.filter_chains[0].transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value
    validation = context.common_tls_context.combined_validation_context.default_validation_context
    matchers = [
        (m.san_type, m.matcher.WhichOneof("match_pattern"), m.matcher.exact)
        for m in validation.match_typed_subject_alt_names
    ]
    uri = common_pb2.SubjectAltNameMatcher.URI
    assert matchers == [
        (uri, "exact", f"spiffe://{TD}/node/edge-1"),
        (uri, "exact", f"spiffe://{TD}/node/private-2"),
    ]


async def test_a_node_alone_or_among_cloud_nodes_gets_no_inbound_listener() -> None:
    _, directory = await directory_with(("cloud-gw-1", "cloud"))
    try:
        settings = await asyncio.to_thread(directory.settings_for, "gpu-1")
    finally:
        await directory.aclose()
    assert settings.mesh is not None
    assert settings.mesh.allowed_peers == ()
    node = compiled(settings)
    assert mesh_listeners(node) == []
    assert mesh_clusters(node) == []


async def test_a_node_joining_or_leaving_recompiles_whom_listeners_admit() -> None:
    store = MemoryStore()
    await store.register_node("gpu-1", registered(mesh_port=8443), ttl_s=60)
    changed = asyncio.Event()
    directory = NodeDirectory(store, "", trust_domain=TD, on_settings_changed=changed.set)
    await directory.start()
    try:
        lease = await store.register_node("edge-1", other("edge-1", "local"), ttl_s=60)
        await asyncio.wait_for(changed.wait(), 5)
        settings = await asyncio.to_thread(directory.settings_for, "gpu-1")
        assert settings.mesh is not None
        assert settings.mesh.allowed_peers == (f"spiffe://{TD}/node/edge-1",)
        changed.clear()
        await store.revoke_lease(lease)
        await asyncio.wait_for(changed.wait(), 5)
        settings = await asyncio.to_thread(directory.settings_for, "gpu-1")
        assert settings.mesh is not None
        assert settings.mesh.allowed_peers == ()
    finally:
        await directory.aclose()
