"""Is a cluster's upstream TLS pinned to a SPIFFE ID? (the node-to-node invariant)."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from tiermesh.controlplane.verify.inventory import over_ads

__all__ = ["pins_peer"]

_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def _contexts(
    common: tls_pb2.CommonTlsContext, secrets: Mapping[str, secret_pb2.Secret]
) -> list[common_pb2.CertificateValidationContext] | None:
    """Every validation context Envoy merges for ``common``; None when one is out of sight.

    A combined context's dynamic part from an ADS-served secret is in the snapshot and
    counts (Envoy merges its SAN matchers into the default context's); one from the node
    agent's local SDS holds the trust bundle the node rotates itself. An ADS secret not in
    the snapshot yet keeps the cluster from connecting at all.
    """
    kind = common.WhichOneof("validation_context_type")
    if kind == "validation_context":
        return [common.validation_context]
    if kind != "combined_validation_context":
        return None
    combined = common.combined_validation_context
    contexts = [combined.default_validation_context]
    if combined.HasField("validation_context_sds_secret_config"):
        sds = combined.validation_context_sds_secret_config
        if over_ads(sds.sds_config) and sds.name in secrets:
            secret = secrets[sds.name]
            if secret.WhichOneof("type") != "validation_context":
                return None
            contexts.append(secret.validation_context)
    elif combined.HasField("validation_context_certificate_provider") or combined.HasField(
        "validation_context_certificate_provider_instance"
    ):
        return None
    return contexts


def _pinned_to(matcher: common_pb2.SubjectAltNameMatcher, spiffe_id: str) -> bool:
    return (
        matcher.san_type == common_pb2.SubjectAltNameMatcher.URI
        and matcher.matcher.WhichOneof("match_pattern") == "exact"
        and matcher.matcher.exact == spiffe_id
        and not matcher.matcher.ignore_case
    )


def pins_peer(
    cluster: cluster_pb2.Cluster,
    spiffe_id: str,
    secrets: Mapping[str, secret_pb2.Secret] | None = None,
) -> bool:
    """True when ``cluster`` connects with TLS and accepts only a peer certificate whose
    URI SAN is exactly ``spiffe_id``: every SAN matcher of every validation context it
    uses (``secrets``: the snapshot's, by name) is that one, there is at least one, the
    chain must verify, and no custom validator or handshaker can overrule it."""
    socket = cluster.transport_socket
    if not cluster.HasField("transport_socket") or socket.typed_config.type_url != _UPSTREAM_TLS:
        return False
    context = tls_pb2.UpstreamTlsContext()
    socket.typed_config.Unpack(context)
    common = context.common_tls_context
    if common.HasField("custom_handshaker"):
        return False
    contexts = _contexts(common, secrets or {})
    if contexts is None:
        return False
    matchers = [m for validation in contexts for m in validation.match_typed_subject_alt_names]
    return (
        bool(matchers)
        and all(_pinned_to(m, spiffe_id) for m in matchers)
        and not any(
            validation.match_subject_alt_names
            or validation.HasField("custom_validator_config")
            or validation.trust_chain_verification
            != common_pb2.CertificateValidationContext.VERIFY_TRUST_CHAIN
            for validation in contexts
        )
    )
