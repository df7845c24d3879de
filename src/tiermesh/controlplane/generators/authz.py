"""The request-time policy hook: Envoy's ext_authz filter and the cluster of its server.

Only for nodes whose :class:`~tiermesh.controlplane.model.AuthzSettings` is set. The
filter runs first on the app listener, so the headers the server sets (effective
``x-tiermesh-sensitivity``, ``x-tiermesh-budget``) exist before the route is chosen
(``clear_route_cache`` re-matches the route after the check). It fails closed:
``failure_mode_allow: false`` and ``status_on_error`` 503, so a dead, slow or failing
server never lets a request reach any upstream, let alone a cloud tier.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2, protocol_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from envoy.type.v3 import http_status_pb2

from tiermesh.controlplane.generators._protos import ms, pack, static_assignment
from tiermesh.controlplane.model import AuthzSettings, names

__all__ = ["EXT_AUTHZ_FILTER", "authz_cluster", "authz_filter"]

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
"""Name of Envoy's external authorization HTTP filter."""
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def authz_filter(
    settings: AuthzSettings, *, metadata_namespaces: tuple[str, ...] = ()
) -> hcm_pb2.HttpFilter:
    """The ext_authz filter: gRPC v3 to :data:`~names.AUTHZ_CLUSTER`, the body (raw bytes,
    cut at ``max_body_bytes`` and marked partial), route re-matched after the check,
    fail closed with 503. ``metadata_namespaces``: the request's dynamic metadata the check
    carries (the ``jwt_authn`` filter's verdict, :mod:`.jwt`)."""
    config = ext_authz_pb2.ExtAuthz(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=names.AUTHZ_CLUSTER),
            timeout=ms(settings.timeout_ms),
        ),
        transport_api_version=config_source_pb2.V3,
        with_request_body=ext_authz_pb2.BufferSettings(
            max_request_bytes=settings.max_body_bytes,
            allow_partial_message=True,
            pack_as_bytes=True,
        ),
        clear_route_cache=True,
        failure_mode_allow=False,
        status_on_error=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
        stat_prefix="tiermesh",
        metadata_context_namespaces=list(metadata_namespaces),
    )
    return hcm_pb2.HttpFilter(name=EXT_AUTHZ_FILTER, typed_config=pack(config))


def authz_cluster(settings: AuthzSettings, connect_timeout_ms: int) -> cluster_pb2.Cluster:
    """A static HTTP/2 cluster with the authz server's one address."""
    options = upstream_http_pb2.HttpProtocolOptions(
        explicit_http_config=upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    return cluster_pb2.Cluster(
        name=names.AUTHZ_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=ms(connect_timeout_ms),
        typed_extension_protocol_options={_HTTP_OPTIONS: pack(options)},
        load_assignment=static_assignment(
            names.AUTHZ_CLUSTER, settings.host, settings.port, settings.socket
        ),
    )
