"""Node-local services on Unix sockets: the registration's sockets win over its ports,
the compiled clusters reach them through Envoy ``pipe`` addresses, and the snapshot
verifies."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tiermesh.controlplane.api import Catalog, Plan, RegisteredNode
from tiermesh.controlplane.generators.usage import USAGE_CLUSTER
from tiermesh.controlplane.model import (
    AuthzSettings,
    CascadeSettings,
    MeshModel,
    NodeSettings,
    UsageSettings,
    names,
)
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.store.memory import MemoryStore
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.xds import typeurls

STATE = "/var/lib/tiermesh/edge-1"


def _registered(**fields: object) -> RegisteredNode:
    return RegisteredNode.model_validate(
        {
            "node_id": EDGE,
            "tier": "local",
            "region": "eu",
            "app_port": 10000,
            "spiffe_id": f"spiffe://mesh.test/node/{EDGE}",
            "registered_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            **fields,
        }
    )


def _socket_settings(catalog: Catalog) -> NodeSettings:
    return NodeSettings(
        app_port=EDGE_SETTINGS.app_port,
        trust_bundle_pem=EDGE_SETTINGS.trust_bundle_pem,
        authz=AuthzSettings(socket=f"{STATE}/authz.sock"),
        usage=UsageSettings(socket=f"{STATE}/usage.sock"),
        cascade=CascadeSettings(socket=f"{STATE}/cascade.sock"),
        credentials={b.credential.secret: "placeholder" for b in catalog.backends if b.credential},
    )


def test_service_clusters_are_pipes_and_the_snapshot_verifies(
    edge_plan: Plan, catalog: Catalog
) -> None:
    model = MeshModel.build([edge_plan], {EDGE: _socket_settings(catalog)})
    snapshot = compile_and_verify(model, EDGE, catalog)
    clusters = snapshot.encoded(typeurls.CLUSTER)
    for name, file in (
        (names.AUTHZ_CLUSTER, "authz.sock"),
        (USAGE_CLUSTER, "usage.sock"),
        (names.CASCADE_CLUSTER, "cascade.sock"),
    ):
        cluster: cluster_pb2.Cluster = clusters[name].decode()
        (endpoint,) = cluster.load_assignment.endpoints[0].lb_endpoints
        address = endpoint.endpoint.address
        assert address.WhichOneof("address") == "pipe", name
        assert (address.pipe.path, address.pipe.mode) == (f"{STATE}/{file}", 0o600)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"socket": "relative.sock"}, "absolute"),
        ({"socket": "/x.sock", "port": 9191}, "both"),
        ({}, "not a TCP port"),
    ],
)
def test_a_service_address_is_one_socket_or_one_port(bad: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AuthzSettings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["relative.sock", "/" + "x" * 107])
def test_a_registration_refuses_unusable_socket_paths(path: str) -> None:
    with pytest.raises(ValueError, match="authz_socket"):
        _registered(authz_socket=path)


async def test_sockets_win_over_ports_and_a_moved_socket_recompiles() -> None:
    store = MemoryStore()
    first = _registered(
        authz_port=9191,
        authz_socket=f"{STATE}/authz.sock",
        usage_port=9292,
        usage_socket=f"{STATE}/usage.sock",
        cascade_socket=f"{STATE}/cascade.sock",
    )
    lease = await store.register_node(EDGE, first.model_dump_json().encode(), ttl_s=60)
    changed = asyncio.Event()
    directory = NodeDirectory(store, "", on_settings_changed=changed.set)
    await directory.start()
    try:
        settings = await asyncio.to_thread(directory.settings_for, EDGE)
        assert settings.authz == AuthzSettings(socket=f"{STATE}/authz.sock")
        assert settings.usage == UsageSettings(socket=f"{STATE}/usage.sock")
        assert settings.cascade == CascadeSettings(socket=f"{STATE}/cascade.sock")
        second = first.model_copy(update={"authz_socket": "/run/other/authz.sock"})
        await store.update_node(lease, second.model_dump_json().encode())
        await asyncio.wait_for(changed.wait(), 5)
        settings = await asyncio.to_thread(directory.settings_for, EDGE)
        assert settings.authz == AuthzSettings(socket="/run/other/authz.sock")
    finally:
        await directory.aclose()
