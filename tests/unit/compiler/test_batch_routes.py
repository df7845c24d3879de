"""The batch service in compiled config: its routes come first and reach only its Unix
socket, the snapshot verifies, a node without one has neither routes nor cluster, and a
registration's ``batch_socket`` becomes the node's settings."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tiermesh.controlplane.api import Catalog, Plan, RegisteredNode
from tiermesh.controlplane.api.surface import BATCH_API
from tiermesh.controlplane.generators.api_surface import PATH_ROUTE
from tiermesh.controlplane.generators.batch import batch_path_regex, batch_route
from tiermesh.controlplane.model import BatchSettings, MeshModel, NodeSettings, names
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.store.memory import MemoryStore
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.controlplane.verify.route_tree import host_routes
from tiermesh.xds import typeurls

SOCKET = "/var/lib/tiermesh/edge-1/batch.sock"


def _settings(catalog: Catalog, batch: BatchSettings | None) -> NodeSettings:
    return dataclasses.replace(
        EDGE_SETTINGS,
        credentials={b.credential.secret: "placeholder" for b in catalog.backends if b.credential},
        batch=batch,
    )


def _compiled(
    plan: Plan, catalog: Catalog, batch: BatchSettings | None
) -> tuple[list[str], dict[str, cluster_pb2.Cluster], route_pb2.RouteConfiguration]:
    model = MeshModel.build([plan], {EDGE: _settings(catalog, batch)})
    snapshot = compile_and_verify(model, EDGE, catalog)
    clusters = {n: r.decode() for n, r in snapshot.encoded(typeurls.CLUSTER).items()}
    (config,) = [r.decode() for r in snapshot.encoded(typeurls.ROUTE).values()]
    routes = [route.name for route in host_routes(config.virtual_hosts[0])]
    return routes, clusters, config


def test_batch_routes_come_first_and_reach_only_the_services_socket(
    edge_plan: Plan, catalog: Catalog
) -> None:
    routes, clusters, config = _compiled(edge_plan, catalog, BatchSettings(socket=SOCKET))
    expected = [batch_route(method, path) for method, path in BATCH_API]
    assert routes[: len(expected)] == expected
    assert routes[len(expected)] == PATH_ROUTE
    for route in host_routes(config.virtual_hosts[0])[: len(expected)]:
        assert route.route.cluster == names.BATCH_CLUSTER
        assert not route.route.HasField("retry_policy")
    (endpoint,) = clusters[names.BATCH_CLUSTER].load_assignment.endpoints[0].lb_endpoints
    address = endpoint.endpoint.address
    assert (address.pipe.path, address.pipe.mode) == (SOCKET, 0o600)


def test_a_node_without_a_batch_service_has_no_batch_route_or_cluster(
    edge_plan: Plan, catalog: Catalog
) -> None:
    routes, clusters, _ = _compiled(edge_plan, catalog, None)
    assert not [r for r in routes if r.startswith("tiermesh/batch/")]
    assert names.BATCH_CLUSTER not in clusters
    assert routes[0] == PATH_ROUTE


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/v1/batches/batch_0a", True),
        ("/v1/batches/", False),
        ("/v1/batches/a/b", False),
        ("/v1/batches/a%2Fb", False),
        ("/v1/batches/..", False),
        ("//v1/batches/a", False),
    ],
)
def test_ids_are_one_plain_segment(path: str, matches: bool) -> None:
    assert (re.fullmatch(batch_path_regex("/v1/batches/{id}"), path) is not None) is matches


def test_a_batch_socket_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute"):
        BatchSettings(socket="batch.sock")


async def test_a_registered_batch_socket_becomes_the_nodes_batch_settings() -> None:
    store = MemoryStore()
    registered = RegisteredNode.model_validate(
        {
            "node_id": EDGE,
            "tier": "local",
            "region": "eu",
            "app_port": 10000,
            "spiffe_id": f"spiffe://mesh.test/node/{EDGE}",
            "registered_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            "batch_socket": SOCKET,
        }
    )
    await store.register_node(EDGE, registered.model_dump_json().encode(), ttl_s=60)
    directory = NodeDirectory(store, "")
    await directory.start()
    try:
        settings = await asyncio.to_thread(directory.settings_for, EDGE)
        assert settings.batch == BatchSettings(socket=SOCKET)
    finally:
        await directory.aclose()
