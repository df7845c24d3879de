"""The compiler's ext_authz support: filter first and fail-closed, its cluster, verified."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from tests.unit.compiler.plans import TEST_BUNDLE, demo_catalog, evaluate_plan
from tiermesh.controlplane.model import AuthzSettings, MeshModel, NodeSettings, names
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.xds import Snapshot, typeurls

NODE = "edge-1"


def compiled(authz: AuthzSettings | None) -> Snapshot:
    catalog = demo_catalog()
    settings = NodeSettings(app_port=10000, trust_bundle_pem=TEST_BUNDLE, authz=authz)
    model = MeshModel.build([evaluate_plan(catalog)], {NODE: settings})
    return compile_and_verify(model, NODE, catalog)


def manager(snapshot: Snapshot) -> hcm_pb2.HttpConnectionManager:
    listener: listener_pb2.Listener = snapshot.encoded(typeurls.LISTENER)[
        names.APP_LISTENER
    ].decode()
    found = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(found)
    return found


def test_ext_authz_runs_first_and_fails_closed() -> None:
    snapshot = compiled(AuthzSettings(port=9191, max_body_bytes=8192, timeout_ms=250))
    filters = manager(snapshot).http_filters
    assert [f.name for f in filters] == [
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.router",
    ]
    config = ext_authz_pb2.ExtAuthz()
    filters[0].typed_config.Unpack(config)
    assert config.grpc_service.envoy_grpc.cluster_name == names.AUTHZ_CLUSTER
    assert config.grpc_service.timeout.ToMilliseconds() == 250
    assert config.transport_api_version == 2  # V3
    assert config.with_request_body.max_request_bytes == 8192
    assert config.with_request_body.allow_partial_message
    assert config.with_request_body.pack_as_bytes
    assert config.clear_route_cache
    assert not config.failure_mode_allow
    assert config.status_on_error.code == 503


def test_the_authz_cluster_is_static_http2_on_loopback() -> None:
    snapshot = compiled(AuthzSettings(port=9191))
    cluster: cluster_pb2.Cluster = snapshot.encoded(typeurls.CLUSTER)[names.AUTHZ_CLUSTER].decode()
    assert cluster.type == cluster_pb2.Cluster.STATIC
    socket = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (socket.address, socket.port_value) == ("127.0.0.1", 9191)
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in (
        cluster.typed_extension_protocol_options
    )


def test_without_authz_settings_nothing_changes() -> None:
    snapshot = compiled(None)
    assert [f.name for f in manager(snapshot).http_filters] == [
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.router",
    ]
    assert names.AUTHZ_CLUSTER not in snapshot.encoded(typeurls.CLUSTER)


def test_bad_settings_are_refused() -> None:
    for bad in ({"port": 0}, {"port": 1, "max_body_bytes": -1}, {"port": 1, "timeout_ms": 0}):
        with pytest.raises(ValueError, match="authz"):
            AuthzSettings(**bad)  # type: ignore[arg-type]
