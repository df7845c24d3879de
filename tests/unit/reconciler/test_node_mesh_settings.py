"""Node-to-node mTLS settings from a registration's ``mesh_port`` (NodeDirectory)."""

from __future__ import annotations

import asyncio
import datetime as dt

from tiermesh.controlplane.api import NodeEndpoint, RegisteredNode
from tiermesh.controlplane.model import MeshTlsSettings
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.store.memory import MemoryStore

TD = "mesh.test"


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
