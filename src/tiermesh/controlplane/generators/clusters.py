"""CDS: one cluster per backend, and one aggregate cluster per fallback chain.

Backend clusters carry everything the plan says about the backend: circuit breakers,
outlier detection, an active HTTP health check on its health path and upstream TLS
(SNI = host, SPIFFE URI SAN match against the trust bundle secret). Backends with an IP
address are EDS clusters; backends with a DNS name are STRICT_DNS clusters with the
endpoint inline (EDS endpoints must be IP addresses). ``metadata.filter_metadata
["tiermesh"]`` holds ``backend``, ``tier``, ``residency`` (and ``spiffe_id`` when set)
for tools and logs; the verifier does not trust it and maps endpoints by address.

Upstream HTTP filters on a backend cluster (``HttpProtocolOptions.http_filters``) are
NOT used: Envoy runs the upstream filter chain of the route's cluster, which for a chain
is the aggregate, so filters on its members never run (checked against Envoy 1.40).
The answering tier comes from endpoint metadata instead (see :mod:`.routes`).

**Credentialed backends** (a ``credential`` in the plan) therefore go through an Envoy
*internal listener*: the backend's cluster (the chain member, with its breaker, outlier
detection and health check) is STATIC with one ``envoy_internal_address`` endpoint,
:func:`~tiermesh.controlplane.model.names.egress_listener`; that listener
(:mod:`.listeners`) injects the API key and routes to
:func:`~tiermesh.controlplane.model.names.egress_cluster`, which connects to the real
endpoint (TLS, SNI). Only requests that chose this member pass the listener, so the key
never reaches another backend. Needs the ``envoy.bootstrap.internal_listener`` bootstrap
extension (verified with Envoy 1.40). Such a backend has no active health check (Envoy's
health checker cannot reach internal listeners): a dead or failing one is ejected by
outlier detection, and retries move its requests down the chain meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from tiermesh.controlplane.generators._protos import ads, is_ip, ms, pack
from tiermesh.controlplane.generators.authz import authz_cluster
from tiermesh.controlplane.generators.batch import batch_clusters
from tiermesh.controlplane.generators.cascade import cascade_clusters
from tiermesh.controlplane.generators.endpoints import internal_assignment, load_assignment
from tiermesh.controlplane.generators.jwt import jwks_clusters
from tiermesh.controlplane.generators.mesh_tls import (
    mesh_clusters,
    mesh_transport_socket,
    uses_mesh_tls,
)
from tiermesh.controlplane.generators.usage import usage_cluster
from tiermesh.controlplane.model import Chain, MeshModel, NodeModel, Upstream, names

__all__ = [
    "AGGREGATE_CLUSTER_TYPE",
    "backend_cluster",
    "chain_cluster",
    "egress_cluster",
    "generate",
]

AGGREGATE_CLUSTER_TYPE = "envoy.clusters.aggregate"
"""Extension name of Envoy's aggregate cluster type."""


def _metadata(upstream: Upstream) -> base_pb2.Metadata:
    backend = upstream.backend
    fields: dict[str, str] = {
        "backend": backend.name,
        "tier": backend.tier,
        "residency": backend.residency,
    }
    if backend.spiffe_id:
        fields["spiffe_id"] = backend.spiffe_id
    tiermesh = struct_pb2.Struct()
    tiermesh.update(fields)
    return base_pb2.Metadata(filter_metadata={"tiermesh": tiermesh})


def _tls(upstream: Upstream) -> base_pb2.TransportSocket:
    backend = upstream.backend
    common = tls_pb2.CommonTlsContext()
    if backend.spiffe_id:
        common.combined_validation_context.CopyFrom(
            tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                default_validation_context=common_pb2.CertificateValidationContext(
                    match_typed_subject_alt_names=[
                        common_pb2.SubjectAltNameMatcher(
                            san_type=common_pb2.SubjectAltNameMatcher.URI,
                            matcher=string_pb2.StringMatcher(exact=backend.spiffe_id),
                        )
                    ]
                ),
                validation_context_sds_secret_config=secret_pb2.SdsSecretConfig(
                    name=names.TRUST_BUNDLE_SECRET, sds_config=ads()
                ),
            )
        )
    context = tls_pb2.UpstreamTlsContext(sni=backend.endpoint.host, common_tls_context=common)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def backend_cluster(upstream: Upstream, connect_timeout_ms: int) -> cluster_pb2.Cluster:
    """The cluster of one backend."""
    backend = upstream.backend
    breaker = backend.circuit_breaker
    outlier = backend.outlier_detection
    check = backend.health_check
    cluster = cluster_pb2.Cluster(
        name=upstream.name,
        connect_timeout=ms(connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    priority=base_pb2.DEFAULT,
                    max_connections=wrappers_pb2.UInt32Value(value=breaker.max_connections),
                    max_pending_requests=wrappers_pb2.UInt32Value(value=breaker.max_pending),
                    max_requests=wrappers_pb2.UInt32Value(value=breaker.max_requests),
                    max_retries=wrappers_pb2.UInt32Value(value=breaker.max_retries),
                )
            ]
        ),
        outlier_detection=outlier_detection_pb2.OutlierDetection(
            consecutive_5xx=wrappers_pb2.UInt32Value(value=outlier.consecutive_5xx),
            interval=ms(outlier.interval_ms),
            base_ejection_time=ms(outlier.base_ejection_ms),
            max_ejection_percent=wrappers_pb2.UInt32Value(value=outlier.max_ejection_percent),
            # Without it a percentage below 100 rounds down to no host at all for a backend
            # with one endpoint (a provider's API, a single llama.cpp): the breaker never
            # opened and every request still tried the failing backend first.
            always_eject_one_host=wrappers_pb2.BoolValue(value=True),
        ),
        health_checks=[
            health_check_pb2.HealthCheck(
                timeout=ms(check.timeout_ms),
                interval=ms(check.interval_ms),
                # A host that failed its first check gets no traffic, and Envoy then
                # checks it only every no_traffic_interval (default 60 s): a fallback
                # tier that came up a moment after this node stayed out for a minute.
                no_traffic_interval=ms(check.interval_ms),
                unhealthy_threshold=wrappers_pb2.UInt32Value(value=check.unhealthy_threshold),
                healthy_threshold=wrappers_pb2.UInt32Value(value=check.healthy_threshold),
                http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(path=check.path),
            )
        ],
        metadata=_metadata(upstream),
    )
    if backend.credential is not None:
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.load_assignment.CopyFrom(internal_assignment(upstream.name, backend))
        # Active health checks run on Envoy's main thread, which cannot connect to
        # internal listeners (Envoy 1.40: "connect to previously closed peer"), so an
        # egress backend's health is passive only: outlier detection on this cluster.
        del cluster.health_checks[:]
        return cluster
    _connect(cluster, upstream)
    return cluster


def _connect(cluster: cluster_pb2.Cluster, upstream: Upstream) -> None:
    """Point ``cluster`` at the backend's real endpoint: EDS for an IP, DNS for a name."""
    backend = upstream.backend
    if is_ip(backend.endpoint.host):
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.CopyFrom(
            cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads(), service_name=backend.name)
        )
    else:
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.load_assignment.CopyFrom(load_assignment(cluster.name, backend))
    if backend.endpoint.tls:
        cluster.transport_socket.CopyFrom(_tls(upstream))


def egress_cluster(upstream: Upstream, connect_timeout_ms: int) -> cluster_pb2.Cluster:
    """The cluster behind a credentialed backend's egress listener: the real endpoint.

    Breakers, outlier detection and health checks live on the backend's own cluster
    (the chain member); this one only connects.
    """
    cluster = cluster_pb2.Cluster(
        name=names.egress_cluster(upstream.name),
        connect_timeout=ms(connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        metadata=_metadata(upstream),
    )
    _connect(cluster, upstream)
    return cluster


def chain_cluster(
    chain: Chain, connect_timeout_ms: int, members: Mapping[str, Upstream]
) -> cluster_pb2.Cluster:
    """The aggregate cluster of one chain: members in order, as priority levels.

    Envoy sends to the first member with healthy hosts; a retry with the
    ``previous_priorities`` retry priority (set on the route) skips members already tried.
    Envoy counts a route's requests and retries against the route's cluster — this one —
    so its thresholds are what the members can take together: left at Envoy's defaults
    (3 retries in flight), a failing first tier under load overflowed them and clients
    saw errors although the next tier was idle. Moving down the chain is a retry here, so
    the retry budget is the requests the members can take, not the members' own retries.
    """
    breakers = [members[name].backend.circuit_breaker for name in chain.members]
    in_flight = sum(b.max_requests for b in breakers)
    return cluster_pb2.Cluster(
        name=chain.name,
        connect_timeout=ms(connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        cluster_type=cluster_pb2.Cluster.CustomClusterType(
            name=AGGREGATE_CLUSTER_TYPE,
            typed_config=pack(aggregate_pb2.ClusterConfig(clusters=list(chain.members))),
        ),
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    priority=base_pb2.DEFAULT,
                    max_connections=wrappers_pb2.UInt32Value(
                        value=sum(b.max_connections for b in breakers)
                    ),
                    max_pending_requests=wrappers_pb2.UInt32Value(
                        value=sum(b.max_pending for b in breakers)
                    ),
                    max_requests=wrappers_pb2.UInt32Value(value=in_flight),
                    max_retries=wrappers_pb2.UInt32Value(value=in_flight),
                )
            ]
        ),
    )


def _with_mesh_tls(node: NodeModel, upstream: Upstream, timeout: int) -> cluster_pb2.Cluster:
    """:func:`backend_cluster`, presenting the node's SVID (local SDS) to a SPIFFE peer
    when the node has mesh settings (:mod:`.mesh_tls`)."""
    cluster = backend_cluster(upstream, timeout)
    if uses_mesh_tls(node, upstream) and cluster.HasField("transport_socket"):
        cluster.transport_socket.CopyFrom(mesh_transport_socket(node, upstream))
    return cluster


def generate(model: MeshModel, node_id: str) -> list[cluster_pb2.Cluster]:
    """Every backend cluster, then every chain's aggregate, each sorted by name, then the
    egress cluster of each credentialed backend, then the authz server's cluster when the
    node has one (:mod:`.authz`), then the access-log server's (:mod:`.usage`), then (with
    the authz server) the remote JWKS clusters of the catalog's JWT issuers (:mod:`.jwt`)."""
    node = model.node(node_id)
    timeout = node.settings.connect_timeout_ms
    authz = node.settings.authz
    usage = node.settings.usage
    upstreams = {upstream.name: upstream for upstream in node.upstreams}
    return [
        *(_with_mesh_tls(node, upstream, timeout) for upstream in node.upstreams),
        *(chain_cluster(chain, timeout, upstreams) for chain in node.chains),
        *(
            egress_cluster(upstream, timeout)
            for upstream in node.upstreams
            if upstream.backend.credential is not None
        ),
        *([] if authz is None else [authz_cluster(authz, timeout)]),
        *([] if usage is None else [usage_cluster(usage, timeout)]),
        *cascade_clusters(node),
        *batch_clusters(node),
        *mesh_clusters(node),
        *([] if authz is None else jwks_clusters(model.jwt_issuers, timeout)),
    ]
