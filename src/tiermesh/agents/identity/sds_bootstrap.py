"""The Envoy bootstrap pieces that fetch the node's secrets from the agent's local SDS server.

Plain dicts in the JSON shape of the Envoy v3 protos (as ``tiermesh.xds.render_bootstrap``
returns), to merge into a bootstrap or a listener/cluster: a static cluster to the SDS
server (HTTP/2, which gRPC needs), an SDS ``ConfigSource`` with a gRPC
``api_config_source`` pointing at it, and TLS transport sockets whose certificate and
validation context come from that source. Pure functions; every call returns new objects.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from tiermesh.agents.identity.sds import BUNDLE_SDS_NAME, SVID_SDS_NAME

__all__ = [
    "SDS_CLUSTER",
    "downstream_tls_socket",
    "sds_cluster",
    "sds_config_source",
    "sds_secret_config",
    "upstream_tls_socket",
    "with_sds_cluster",
]

SDS_CLUSTER = "tiermesh_sds"
_TYPE = "type.googleapis.com/"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _address(address: str) -> dict[str, Any]:
    if address.startswith("unix:"):
        return {"pipe": {"path": address.removeprefix("unix:")}}
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"SDS address {address!r} is neither unix:/path nor host:port")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def sds_cluster(address: str, *, name: str = SDS_CLUSTER) -> dict[str, Any]:
    """A static cluster to the local SDS server at ``address`` (``unix:/path`` or
    ``host:port``), speaking HTTP/2. Raises ``ValueError`` for another form."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": _TYPE + _HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(address)}}]}],
        },
    }


def sds_config_source(
    *, cluster: str = SDS_CLUSTER, initial_fetch_timeout_s: float = 10.0
) -> dict[str, Any]:
    """A ``ConfigSource``: SotW gRPC to ``cluster`` (Envoy calls ``StreamSecrets``)."""
    return {
        "resource_api_version": "V3",
        "initial_fetch_timeout": f"{initial_fetch_timeout_s}s",
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": cluster}}],
            "set_node_on_first_message_only": True,
        },
    }


def sds_secret_config(name: str, *, cluster: str = SDS_CLUSTER) -> dict[str, Any]:
    """An ``SdsSecretConfig``: the secret ``name`` from the local SDS server."""
    return {"name": name, "sds_config": sds_config_source(cluster=cluster)}


def _common_tls_context(
    svid_secret: str, validation_secret: str, cluster: str, alpn: Sequence[str]
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "tls_certificate_sds_secret_configs": [sds_secret_config(svid_secret, cluster=cluster)],
        "validation_context_sds_secret_config": sds_secret_config(
            validation_secret, cluster=cluster
        ),
    }
    if alpn:
        context["alpn_protocols"] = list(alpn)
    return context


def downstream_tls_socket(
    *,
    svid_secret: str = SVID_SDS_NAME,
    validation_secret: str = BUNDLE_SDS_NAME,
    require_client_certificate: bool = True,
    cluster: str = SDS_CLUSTER,
    alpn: Sequence[str] = (),
) -> dict[str, Any]:
    """A listener ``transport_socket`` terminating (m)TLS with the node's SVID; clients are
    checked against ``validation_secret`` (and must present a certificate by default)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": _common_tls_context(
                svid_secret, validation_secret, cluster, alpn
            ),
            "require_client_certificate": require_client_certificate,
        },
    }


def upstream_tls_socket(
    *,
    svid_secret: str = SVID_SDS_NAME,
    validation_secret: str = BUNDLE_SDS_NAME,
    sni: str = "",
    cluster: str = SDS_CLUSTER,
    alpn: Sequence[str] = (),
) -> dict[str, Any]:
    """A cluster ``transport_socket`` for mTLS to a peer: the node's SVID as client
    certificate, the peer checked against ``validation_secret`` (use a secret with
    ``peer_spiffe_ids`` to pin the peer's SPIFFE ID)."""
    typed: dict[str, Any] = {
        "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": _common_tls_context(svid_secret, validation_secret, cluster, alpn),
    }
    if sni:
        typed["sni"] = sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed}


def with_sds_cluster(
    bootstrap: dict[str, Any], address: str, *, name: str = SDS_CLUSTER
) -> dict[str, Any]:
    """A copy of ``bootstrap`` with :func:`sds_cluster` added to its static clusters."""
    result = copy.deepcopy(bootstrap)
    static = result.setdefault("static_resources", {})
    static.setdefault("clusters", []).append(sds_cluster(address, name=name))
    return result
