"""Small proto helpers shared by the generators (private)."""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

__all__ = ["SOCKET_MODE", "ads", "is_ip", "ms", "pack", "static_assignment"]

SOCKET_MODE = 0o600
"""Mode of the node-local services' Unix sockets: only the node's own user connects."""


def pack(message: Message) -> any_pb2.Any:
    """``message`` packed into an ``Any`` with the standard type URL prefix, serialized
    deterministically (map entries, such as a ``Struct``'s fields, in key order), so that
    equal messages pack to equal bytes in every process: snapshot versions are digests
    of these bytes."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def ms(millis: int) -> duration_pb2.Duration:
    """A ``Duration`` of ``millis`` milliseconds."""
    return duration_pb2.Duration(seconds=millis // 1000, nanos=(millis % 1000) * 1_000_000)


def ads() -> config_source_pb2.ConfigSource:
    """A v3 config source served over the ADS stream."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def is_ip(host: str) -> bool:
    """True for an IPv4/IPv6 literal (EDS endpoints must be IPs; names need DNS clusters)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def static_assignment(
    name: str, host: str, port: int, socket: str | None = None
) -> endpoint_pb2.ClusterLoadAssignment:
    """The load assignment of a STATIC cluster ``name`` with one address: the Unix socket
    ``socket`` (Envoy ``pipe``) when given, else ``host:port`` (the node's own services:
    authz, usage, the cascade handler)."""
    if socket is not None:
        address = address_pb2.Address(pipe=address_pb2.Pipe(path=socket, mode=SOCKET_MODE))
    else:
        address = address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=host, port_value=port)
        )
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=address)
    )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
    )
