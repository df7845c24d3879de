"""Envoy bootstrap documents that point Envoy at an ADS server.

The result is a plain dict in the shape of ``envoy.config.bootstrap.v3.Bootstrap``'s JSON
mapping; :func:`validate_bootstrap` parses it with the real proto so a typo fails here and
not inside Envoy.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.bootstrap.internal_listener.v3 import internal_listener_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from tiermesh.xds.ready_listener import ready_listener

__all__ = [
    "ADMIN_SOCKET_MODE",
    "ADS_KEEPALIVE_INTERVAL_S",
    "ADS_KEEPALIVE_TIMEOUT_S",
    "AdsTls",
    "BootstrapSpec",
    "render_bootstrap",
    "validate_bootstrap",
]

XDS_CLUSTER = "tiermesh_xds"
ADS_KEEPALIVE_INTERVAL_S = 1
ADS_KEEPALIVE_TIMEOUT_S = 2
"""HTTP/2 PINGs on the ADS connection: a control-plane replica that stops answering
(paused, partitioned, its host frozen) is given up within about 3.2 s (a PING every
second, jittered by up to 15 %, unanswered for 2 s) and the stream reconnects to another
replica, so a push is served within the 5 s a killed replica costs (Envoy's default would
be never). PING ACKs come from gRPC core's own threads, not Python: a replica whose
interpreter is busy (a long reconcile, a full collection) still answers them. The ADS
server must accept PINGs this often (``grpc.http2.min_ping_interval_without_data_ms``,
set by the control plane through :func:`tiermesh.xds.server.server_options`); when it
did not, it answered every pinging Envoy with a ``too_many_pings`` GOAWAY, which is what
made faster pinging look like it cost healthy connections."""
ADS_RETRY_BASE = "0.1s"
ADS_RETRY_MAX = "2s"
"""Backoff between attempts to re-open a broken ADS stream (Envoy's default is 0.5 s up to
30 s): with several replicas an attempt that lands on a dying one is followed at once by
one on the next endpoint."""
ADMIN_SOCKET_MODE = 0o600
"""Mode of an admin Unix socket: its owner only."""
_TYPE = "type.googleapis.com/"

# Typed configs inside the bootstrap resolve through the descriptor pool: keep these loaded.
_TYPED_CONFIGS = (
    http_protocol_options_pb2.HttpProtocolOptions,
    tls_pb2.UpstreamTlsContext,
    internal_listener_pb2.InternalListener,
    http_connection_manager_pb2.HttpConnectionManager,
    health_check_pb2.HealthCheck,
    router_pb2.Router,
)

INTERNAL_LISTENER_EXTENSION = "envoy.bootstrap.internal_listener"


@dataclass(frozen=True, slots=True)
class AdsTls:
    """Files Envoy uses for mTLS to the ADS server (its own SVID, key, and the trust bundle)."""

    cert_chain: str
    private_key: str
    trusted_ca: str
    server_san: str = ""
    """If set, the exact SAN (e.g. the control plane's SPIFFE ID) the server must present."""


@dataclass(frozen=True, slots=True)
class BootstrapSpec:
    """What :func:`render_bootstrap` needs to know about one Envoy."""

    node_id: str
    xds_host: str
    """The ADS server: an IPv4/IPv6 literal (no brackets) or a host name Envoy resolves."""
    xds_port: int
    xds_more: tuple[tuple[str, int], ...] = ()
    """Further ADS servers (other replicas of the control plane), ``(host, port)`` each:
    every one is an endpoint of the ADS cluster, so a stream that breaks reconnects to
    another (the cluster's round robin moves on from a server that refuses)."""
    cluster: str = "tiermesh"
    admin_port: int = 0
    admin_address: str = "127.0.0.1"
    admin_socket: str | None = None
    """If set, the admin interface listens on this Unix socket (absolute path, mode
    :data:`ADMIN_SOCKET_MODE`) instead of ``admin_address:admin_port``: the admin interface
    is unauthenticated (config dumps hold secrets, ``/quitquitquit`` stops Envoy), so only
    the socket's owner should reach it."""
    mode: Literal["sotw", "delta"] = "sotw"
    metadata: dict[str, str] = field(default_factory=dict)
    tls: AdsTls | None = None
    initial_fetch_timeout_s: float = 15.0
    internal_listeners: bool = True
    """Load the ``envoy.bootstrap.internal_listener`` extension. Envoy refuses (NACKs) any
    listener with an ``internal_listener`` address unless the bootstrap loads it; pushed
    configuration may contain such listeners (e.g. egress listeners that inject cloud API
    keys), so it is on unless a test wants a bare bootstrap."""
    ready_address: tuple[str, int] | None = None
    """If set, a static listener on this ``(host, port)`` answers ``GET /ready`` and
    nothing else (:mod:`.ready_listener`): a health check for containers that cannot
    reach the admin socket."""


def _admin_address(spec: BootstrapSpec) -> dict[str, Any]:
    if spec.admin_socket is not None:
        return {"pipe": {"path": spec.admin_socket, "mode": ADMIN_SOCKET_MODE}}
    return {"socket_address": {"address": spec.admin_address, "port_value": spec.admin_port}}


def render_bootstrap(spec: BootstrapSpec) -> dict[str, Any]:
    """A bootstrap that fetches everything over ADS (gRPC over HTTP/2), SotW or delta.

    The node id arrives on each stream's first message only. Clusters and listeners are
    wildcard subscriptions; Envoy asks for endpoints, routes and secrets by name.

    The ADS cluster is ``STATIC`` when every ADS host is an IP literal. One host name
    (``controlplane-1``, ``localhost``) makes it ``LOGICAL_DNS`` with ``V4_PREFERRED``
    lookups: Envoy refuses a static cluster with a name, and the one long-lived gRPC
    stream wants a single address (a new connection takes the latest DNS answer; an
    open stream is not cut when the answer changes). Several ADS servers with a name
    among them make it ``STRICT_DNS`` (``LOGICAL_DNS`` takes one endpoint only). With
    ``spec.internal_listeners`` the document carries ``bootstrap_extensions`` loading the
    internal-listener extension; without it the key is absent. With
    ``spec.ready_address`` it has one static listener, the readiness one.
    """
    ads_source = {
        "ads": {},
        "resource_api_version": "V3",
        "initial_fetch_timeout": f"{spec.initial_fetch_timeout_s}s",
    }
    servers = ((spec.xds_host, spec.xds_port), *spec.xds_more)
    if all(_is_ip(host) for host, _ in servers):
        kind = "STATIC"
    else:
        kind = "LOGICAL_DNS" if len(servers) == 1 else "STRICT_DNS"
    xds_cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": kind,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {
                            "interval": f"{ADS_KEEPALIVE_INTERVAL_S}s",
                            "timeout": f"{ADS_KEEPALIVE_TIMEOUT_S}s",
                        }
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": host, "port_value": port}}
                            }
                        }
                        for host, port in servers
                    ]
                }
            ],
        },
    }
    if kind != "STATIC":
        # AUTO (Envoy's default) takes an IPv6 answer first: where /etc/hosts also maps
        # `localhost` to ::1, Envoy would call ::1 while the server listens on 127.0.0.1.
        # V4_PREFERRED takes IPv4 when there is an A record and falls back to IPv6.
        xds_cluster["dns_lookup_family"] = "V4_PREFERRED"
    if spec.tls is not None:
        xds_cluster["transport_socket"] = _upstream_tls(spec.tls)
    document: dict[str, Any] = {
        "node": {
            "id": spec.node_id,
            "cluster": spec.cluster,
            "metadata": dict(spec.metadata),
        },
        "admin": {"address": _admin_address(spec)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if spec.mode == "delta" else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [
                    {
                        "envoy_grpc": {"cluster_name": XDS_CLUSTER},
                        "retry_policy": {
                            "retry_back_off": {
                                "base_interval": ADS_RETRY_BASE,
                                "max_interval": ADS_RETRY_MAX,
                            }
                        },
                    }
                ],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {"clusters": [xds_cluster]},
    }
    if spec.ready_address is not None:
        document["static_resources"]["listeners"] = [ready_listener(*spec.ready_address)]
    if spec.internal_listeners:
        document["bootstrap_extensions"] = [
            {
                "name": INTERNAL_LISTENER_EXTENSION,
                "typed_config": {
                    "@type": _TYPE
                    + "envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
                },
            }
        ]
    return document


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _upstream_tls(tls: AdsTls) -> dict[str, Any]:
    validation: dict[str, Any] = {"trusted_ca": {"filename": tls.trusted_ca}}
    if tls.server_san:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": tls.server_san}}
        ]
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": tls.cert_chain},
                        "private_key": {"filename": tls.private_key},
                    }
                ],
                "validation_context": validation,
                "alpn_protocols": ["h2"],
            },
        },
    }


def validate_bootstrap(document: dict[str, Any]) -> None:
    """Parse ``document`` as an Envoy Bootstrap; raises ``json_format.ParseError`` if invalid."""
    json_format.Parse(json.dumps(document), bootstrap_pb2.Bootstrap())
