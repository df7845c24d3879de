"""Resource names and the references between xDS resources.

Only references that resolve through ADS are followed: an RDS name in an HTTP connection
manager, an EDS cluster's service name, and SDS secret names in TLS contexts.
"""

from __future__ import annotations

from collections.abc import Iterator

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf.message import Message

from tiermesh.xds import typeurls

__all__ = ["MESSAGE_CLASSES", "Reference", "references", "resource_name"]

#: The message class of each served type URL.
MESSAGE_CLASSES: dict[str, type[Message]] = {
    typeurls.CLUSTER: cluster_pb2.Cluster,
    typeurls.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    typeurls.LISTENER: listener_pb2.Listener,
    typeurls.ROUTE: route_pb2.RouteConfiguration,
    typeurls.SECRET: secret_pb2.Secret,
}

_HCM_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_UPSTREAM_TLS_URL = "type.googleapis.com/" + tls_pb2.UpstreamTlsContext.DESCRIPTOR.full_name
_DOWNSTREAM_TLS_URL = "type.googleapis.com/" + tls_pb2.DownstreamTlsContext.DESCRIPTOR.full_name

#: (type URL of the referenced resource, its name)
Reference = tuple[str, str]


def resource_name(type_url: str, message: Message) -> str:
    """The name by which xDS clients subscribe to ``message``."""
    if type_url == typeurls.ENDPOINT:
        assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
        return str(message.cluster_name)
    return str(getattr(message, "name"))  # noqa: B009 - every other served type has ``name``


def references(type_url: str, message: Message) -> Iterator[Reference]:
    """Yield the ADS-served resources ``message`` depends on."""
    if isinstance(message, cluster_pb2.Cluster):
        yield from _cluster_references(message)
    elif isinstance(message, listener_pb2.Listener):
        yield from _listener_references(message)


def _cluster_references(cluster: cluster_pb2.Cluster) -> Iterator[Reference]:
    if cluster.HasField("type") and cluster.type == cluster_pb2.Cluster.EDS:
        eds = cluster.eds_cluster_config
        if not eds.HasField("eds_config") or eds.eds_config.HasField("ads"):
            yield typeurls.ENDPOINT, eds.service_name or cluster.name
    if cluster.HasField("transport_socket"):
        yield from _tls_references(cluster.transport_socket)
    for match in cluster.transport_socket_matches:
        yield from _tls_references(match.transport_socket)


def _listener_references(listener: listener_pb2.Listener) -> Iterator[Reference]:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        if chain.HasField("transport_socket"):
            yield from _tls_references(chain.transport_socket)
        for network_filter in chain.filters:
            typed = network_filter.typed_config
            if typed.type_url != _HCM_URL:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            typed.Unpack(hcm)
            if hcm.HasField("rds") and hcm.rds.config_source.HasField("ads"):
                yield typeurls.ROUTE, hcm.rds.route_config_name


def _tls_references(socket: base_pb2.TransportSocket) -> Iterator[Reference]:
    typed = socket.typed_config
    context: tls_pb2.UpstreamTlsContext | tls_pb2.DownstreamTlsContext
    if typed.type_url == _UPSTREAM_TLS_URL:
        context = tls_pb2.UpstreamTlsContext()
    elif typed.type_url == _DOWNSTREAM_TLS_URL:
        context = tls_pb2.DownstreamTlsContext()
    else:
        return
    typed.Unpack(context)
    yield from _common_tls_references(context.common_tls_context)


def _common_tls_references(common: tls_pb2.CommonTlsContext) -> Iterator[Reference]:
    for sds in common.tls_certificate_sds_secret_configs:
        if _via_ads(sds):
            yield typeurls.SECRET, sds.name
    if common.HasField("validation_context_sds_secret_config"):
        sds = common.validation_context_sds_secret_config
        if _via_ads(sds):
            yield typeurls.SECRET, sds.name
    if common.HasField("combined_validation_context"):
        sds = common.combined_validation_context.validation_context_sds_secret_config
        if sds.name and _via_ads(sds):
            yield typeurls.SECRET, sds.name


def _via_ads(sds: secret_pb2.SdsSecretConfig) -> bool:
    return not sds.HasField("sds_config") or sds.sds_config.HasField("ads")
