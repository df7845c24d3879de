"""Is a cluster's upstream TLS pinned to a SPIFFE ID? (the node-to-node invariant)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

__all__ = ["pins_peer"]

_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def pins_peer(cluster: cluster_pb2.Cluster, spiffe_id: str) -> bool:
    """True when ``cluster`` connects with TLS and accepts only a peer certificate whose
    URI SAN is exactly ``spiffe_id`` (every SAN matcher it has is that one)."""
    socket = cluster.transport_socket
    if not cluster.HasField("transport_socket") or socket.typed_config.type_url != _UPSTREAM_TLS:
        return False
    context = tls_pb2.UpstreamTlsContext()
    socket.typed_config.Unpack(context)
    common = context.common_tls_context
    if common.HasField("combined_validation_context"):
        validation = common.combined_validation_context.default_validation_context
    elif common.HasField("validation_context"):
        validation = common.validation_context
    else:
        return False
    matchers = list(validation.match_typed_subject_alt_names)
    return bool(matchers) and all(
        m.san_type == common_pb2.SubjectAltNameMatcher.URI
        and m.matcher.WhichOneof("match_pattern") == "exact"
        and m.matcher.exact == spiffe_id
        and not m.matcher.ignore_case
        for m in matchers
    )
