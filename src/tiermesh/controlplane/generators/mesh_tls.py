"""Node-to-node mTLS: the inbound listener in front of a node's model server, and the
client side of clusters that call another node's.

Only with :attr:`~tiermesh.controlplane.model.NodeSettings.mesh`. Both sides take their
certificates from the node agent's *local* SDS server (the bootstrap's static cluster
:attr:`~tiermesh.controlplane.model.MeshTlsSettings.sds_cluster`), never from ADS: the
node's SVID and private key never pass through the control plane, and the trust bundle is
the one the agent rotates with it. The snapshot therefore references secrets it does not
hold, which is correct (its consistency check follows ADS-served secrets only).

- **Inbound** (:func:`mesh_listeners`): a listener on ``inbound_address:inbound_port``
  that requires a client certificate chaining to the trust bundle whose URI SAN is
  exactly one of ``allowed_peers`` (never a prefix: another SVID of the trust domain, a
  cloud gateway's say, fails the handshake). Requests on it are decided and recorded like
  any other: the node's ext_authz filter (:func:`~.authz.authz_filter`, the same server,
  body and fail-closed settings as the app listener's) runs first, its check marked as a
  mesh hop (:data:`~tiermesh.controlplane.api.MESH_HOP_CONTEXT` in the virtual host's
  ``context_extensions``, which only this configuration sets; Envoy adds the verified
  peer's SPIFFE ID as the check's source principal); what it allows goes to the node's
  model server (:func:`mesh_clusters`), with the cascade token removed. The callers'
  active health checks (``GET`` of exactly a path of ``probe_paths``) take probe routes
  whose checks are marked as probes
  (:data:`~tiermesh.controlplane.api.MESH_PROBE_CONTEXT`): they carry no tenant, and are
  decided in code rather than refused by the request policy. A node without an
  ext_authz server answers every mesh request 503, as its app listener does. There is no
  usage filter and no access log on it: the sending node's app listener charged the
  tenant for this request, and charging here too would count it twice. With no allowed
  peer neither listener nor cluster is compiled.
- **Outbound** (:func:`mesh_transport_socket`): a backend cluster with TLS and a
  ``spiffe_id`` presents the node's SVID and accepts only a peer whose URI SAN is exactly
  that ``spiffe_id``, so a request sent to the wrong node fails at the handshake.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, wrappers_pb2

from tiermesh.controlplane.api import MESH_HOP_CONTEXT, MESH_PROBE_CONTEXT
from tiermesh.controlplane.generators._protos import ms, pack
from tiermesh.controlplane.generators.authz import EXT_AUTHZ_FILTER, authz_filter
from tiermesh.controlplane.model import MeshTlsSettings, NodeModel, Upstream, names

__all__ = [
    "MESH_LISTENER",
    "MESH_LOCAL_CLUSTER",
    "MESH_NO_AUTHZ_ROUTE",
    "MESH_PROBE_ROUTE",
    "mesh_clusters",
    "mesh_listeners",
    "mesh_transport_socket",
    "uses_mesh_tls",
]

MESH_LISTENER = "tiermesh_mesh_in"
"""Name of the inbound mTLS listener."""
MESH_LOCAL_CLUSTER = "tiermesh_mesh_local"
"""Name of the cluster from the inbound listener to the node's own model server."""
MESH_PROBE_ROUTE = "tiermesh/mesh-probe"
"""Name prefix of the probe routes (the path follows)."""
MESH_NO_AUTHZ_ROUTE = "tiermesh/mesh-no-authz"
"""The one route of a mesh listener on a node without an ext_authz server: 503."""

_TLS_SOCKET = "envoy.transport_sockets.tls"


def uses_mesh_tls(node: NodeModel, upstream: Upstream) -> bool:
    """Does ``upstream``'s cluster on ``node`` speak mTLS with certificates from local SDS?"""
    backend = upstream.backend
    return node.settings.mesh is not None and backend.endpoint.tls and bool(backend.spiffe_id)


def _local_sds(mesh: MeshTlsSettings, name: str) -> secret_pb2.SdsSecretConfig:
    source = config_source_pb2.ConfigSource(
        resource_api_version=config_source_pb2.V3,
        initial_fetch_timeout=ms(10_000),
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            transport_api_version=config_source_pb2.V3,
            grpc_services=[
                grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=mesh.sds_cluster)
                )
            ],
            set_node_on_first_message_only=True,
        ),
    )
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def _common(
    mesh: MeshTlsSettings, peers: list[string_pb2.StringMatcher]
) -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_local_sds(mesh, mesh.svid_secret)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=[
                    common_pb2.SubjectAltNameMatcher(
                        san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=matcher
                    )
                    for matcher in peers
                ]
            ),
            validation_context_sds_secret_config=_local_sds(mesh, mesh.bundle_secret),
        ),
    )


def mesh_transport_socket(node: NodeModel, upstream: Upstream) -> base_pb2.TransportSocket:
    """The client side: the node's SVID, the peer pinned to the backend's ``spiffe_id``.

    Only for an upstream :func:`uses_mesh_tls` accepts.
    """
    mesh = node.settings.mesh
    backend = upstream.backend
    if mesh is None or not backend.spiffe_id:
        raise ValueError(f"backend {backend.name!r} does not use mesh TLS on this node")
    context = tls_pb2.UpstreamTlsContext(
        sni=backend.endpoint.host,
        common_tls_context=_common(mesh, [string_pb2.StringMatcher(exact=backend.spiffe_id)]),
    )
    return base_pb2.TransportSocket(name=_TLS_SOCKET, typed_config=pack(context))


def _inbound(node: NodeModel) -> MeshTlsSettings | None:
    """The node's mesh settings when it has an inbound listener (some peer may call)."""
    mesh = node.settings.mesh
    return mesh if mesh is not None and mesh.allowed_peers else None


def _mesh_routes(node: NodeModel) -> route_components_pb2.VirtualHost:
    """Every request to the model server, the ext_authz check marked as a mesh hop; on a
    node without an ext_authz server, every request answered 503 (nothing forwarded
    uninspected)."""
    if node.settings.authz is None:
        refuse = route_components_pb2.Route(
            name=MESH_NO_AUTHZ_ROUTE,
            match=route_components_pb2.RouteMatch(prefix="/"),
            direct_response=route_components_pb2.DirectResponseAction(
                status=503,
                body=base_pb2.DataSource(
                    inline_string="tiermesh: this node runs no request-time policy, so it "
                    "forwards nothing from other nodes\n"
                ),
            ),
        )
        return route_components_pb2.VirtualHost(name="mesh_in", domains=["*"], routes=[refuse])
    mesh = node.settings.mesh
    probes = [] if mesh is None else [_probe_route(path) for path in mesh.probe_paths]
    return route_components_pb2.VirtualHost(
        name="mesh_in",
        domains=["*"],
        routes=[
            *probes,
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"),
                route=route_components_pb2.RouteAction(cluster=MESH_LOCAL_CLUSTER, timeout=ms(0)),
                request_headers_to_remove=[names.CASCADE_TOKEN_HEADER],
            ),
        ],
        typed_per_filter_config={EXT_AUTHZ_FILTER: _check(MESH_HOP_CONTEXT)},
    )


def _check(context: Mapping[str, str]) -> any_pb2.Any:
    """The per-route ext_authz settings that mark a check with ``context``."""
    settings = ext_authz_pb2.CheckSettings(context_extensions=dict(context))
    return pack(ext_authz_pb2.ExtAuthzPerRoute(check_settings=settings))


def _probe_route(path: str) -> route_components_pb2.Route:
    """A caller's health check: ``GET`` of exactly ``path``, its check marked as a probe."""
    get = route_components_pb2.HeaderMatcher(
        name=":method", string_match=string_pb2.StringMatcher(exact="GET")
    )
    return route_components_pb2.Route(
        name=f"{MESH_PROBE_ROUTE}{path}",
        match=route_components_pb2.RouteMatch(path=path, headers=[get]),
        route=route_components_pb2.RouteAction(cluster=MESH_LOCAL_CLUSTER, timeout=ms(0)),
        request_headers_to_remove=[names.CASCADE_TOKEN_HEADER],
        typed_per_filter_config={EXT_AUTHZ_FILTER: _check(MESH_PROBE_CONTEXT)},
    )


def mesh_listeners(node: NodeModel) -> list[listener_pb2.Listener]:
    """The inbound mTLS listener (see the module docstring), or nothing when the node has
    no mesh settings or no allowed peer."""
    mesh = _inbound(node)
    if mesh is None:
        return []
    authz = node.settings.authz
    filters = [] if authz is None else [authz_filter(authz)]
    filters.append(
        hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix="tiermesh_mesh",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=route_pb2.RouteConfiguration(
            name=MESH_LISTENER, virtual_hosts=[_mesh_routes(node)]
        ),
        http_filters=filters,
    )
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common(
            mesh, [string_pb2.StringMatcher(exact=peer) for peer in mesh.allowed_peers]
        ),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )
    return [
        listener_pb2.Listener(
            name=MESH_LISTENER,
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=mesh.inbound_address, port_value=mesh.inbound_port
                )
            ),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.http_connection_manager",
                            typed_config=pack(manager),
                        )
                    ],
                    transport_socket=base_pb2.TransportSocket(
                        name=_TLS_SOCKET, typed_config=pack(context)
                    ),
                )
            ],
        )
    ]


def mesh_clusters(node: NodeModel) -> list[cluster_pb2.Cluster]:
    """The cluster to the node's model server (plain HTTP on the node), when it has an
    inbound listener."""
    mesh = _inbound(node)
    if mesh is None:
        return []
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=mesh.model_host, port_value=mesh.model_port
                )
            )
        )
    )
    return [
        cluster_pb2.Cluster(
            name=MESH_LOCAL_CLUSTER,
            type=cluster_pb2.Cluster.STATIC,
            connect_timeout=ms(node.settings.connect_timeout_ms),
            lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
            load_assignment=endpoint_pb2.ClusterLoadAssignment(
                cluster_name=MESH_LOCAL_CLUSTER,
                endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
            ),
        )
    ]
