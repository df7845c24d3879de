"""Small constructors for the Envoy resources most configurations start from.

They cover the plain HTTP case (an EDS cluster, its endpoints, a listener whose HTTP
connection manager takes routes over ADS, a route table); anything richer is built with
the protos directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2

__all__ = ["eds_cluster", "http_listener", "load_assignment", "route_config"]


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)  # type: ignore[arg-type]
    return packed


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def eds_cluster(name: str, *, connect_timeout_s: float = 1.0) -> cluster_pb2.Cluster:
    """A cluster whose endpoints arrive over ADS as the ClusterLoadAssignment ``name``."""
    seconds = int(connect_timeout_s)
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(
            seconds=seconds, nanos=int((connect_timeout_s - seconds) * 1e9)
        ),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
    )


def load_assignment(
    cluster_name: str, endpoints: Sequence[tuple[str, int]]
) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints (host, port) for ``cluster_name``, all in one locality at priority 0."""
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(
                                socket_address=address_pb2.SocketAddress(
                                    address=host, port_value=port
                                )
                            )
                        )
                    )
                    for host, port in endpoints
                ]
            )
        ],
    )


def http_listener(
    name: str, *, address: str, port: int, route_config_name: str
) -> listener_pb2.Listener:
    """An HTTP listener whose routes come over ADS as ``route_config_name``."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_config_name),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_any(router_pb2.Router())
            )
        ],
    )
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=_any(manager),
                    )
                ]
            )
        ],
    )


def route_config(
    name: str,
    routes: Sequence[tuple[str, str]],
    *,
    response_headers: Sequence[tuple[str, str]] = (),
) -> route_pb2.RouteConfiguration:
    """One virtual host matching every domain; ``routes`` are (path prefix, cluster) pairs."""
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=name,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=prefix),
                        route=route_components_pb2.RouteAction(cluster=cluster),
                    )
                    for prefix, cluster in routes
                ],
                response_headers_to_add=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key=key, value=value),
                        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                    )
                    for key, value in response_headers
                ],
            )
        ],
    )
