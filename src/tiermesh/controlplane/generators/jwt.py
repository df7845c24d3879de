"""Tenant JWTs verified by Envoy: the ``jwt_authn`` filter and the clusters of remote JWKS.

Only for nodes with a request-time policy (``settings.authz``) and a catalog that names JWT
issuers (:class:`~tiermesh.controlplane.api.JwtIssuer`). The filter runs right before
ext_authz on the app listener and never answers a request itself: its one rule requires any
issuer's provider *or* ``allow_missing_or_failed``, so a missing, malformed, expired or
forged token passes on to ext_authz, which decides (401 with a decision record) from what
the filter left in the request's dynamic metadata (namespace :data:`JWT_AUTHN_FILTER`):

- ``payload/<issuer>`` (:data:`PAYLOAD_PREFIX`): the verified token's claims, from the
  provider of the catalog issuer ``<issuer>``;
- ``failure/<issuer>`` (:data:`FAILURE_PREFIX`): ``{code, message}`` of why that issuer's
  provider refused the token (``Jwt issuer is not configured`` from every issuer but the
  token's own).

Tokens are read from ``authorization: Bearer <token>`` only (the scheme spelled ``Bearer``
or ``bearer``: :data:`BEARER_PREFIXES`; Envoy matches it case-sensitively). A verified
token is removed from the request (``forward: false``), so it never reaches an upstream; a
refused one is left for ext_authz to see (and the request goes nowhere). Every token must
carry ``exp``.

A remote key set is fetched by Envoy through a cluster of its own (:func:`jwks_clusters`,
named :func:`~tiermesh.controlplane.model.names.jwks_cluster`): STATIC for an IP address,
STRICT_DNS for a name, TLS for ``https`` with the server's certificate checked against the
system's root CAs and the URL's host as its DNS SAN.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, http_uri_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import empty_pb2

from tiermesh.controlplane.api import JwtIssuer
from tiermesh.controlplane.api.catalog import jwks_address
from tiermesh.controlplane.api.tenant_jwt import (
    JWT_FAILURE_PREFIX,
    JWT_METADATA_NAMESPACE,
    JWT_PAYLOAD_PREFIX,
)
from tiermesh.controlplane.generators._protos import is_ip, ms, pack
from tiermesh.controlplane.model import names

__all__ = [
    "BEARER_PREFIXES",
    "FAILURE_PREFIX",
    "JWT_AUTHN_FILTER",
    "PAYLOAD_PREFIX",
    "jwks_clusters",
    "jwt_filter",
]

JWT_AUTHN_FILTER = JWT_METADATA_NAMESPACE
"""Name of Envoy's JWT filter, and the dynamic-metadata namespace it writes."""
PAYLOAD_PREFIX = JWT_PAYLOAD_PREFIX
"""Dynamic-metadata key prefix of a verified token's claims (then the issuer's name)."""
FAILURE_PREFIX = JWT_FAILURE_PREFIX
"""Dynamic-metadata key prefix of a provider's refusal (then the issuer's name)."""
BEARER_PREFIXES = ("Bearer ", "bearer ")
"""The ``authorization`` value prefixes tokens are read after (Envoy's match is exact)."""


def _provider(issuer: JwtIssuer) -> jwt_pb2.JwtProvider:
    provider = jwt_pb2.JwtProvider(
        issuer=issuer.issuer,
        audiences=list(issuer.audiences),
        require_expiration=True,
        forward=False,
        from_headers=[
            jwt_pb2.JwtHeader(name="authorization", value_prefix=prefix)
            for prefix in BEARER_PREFIXES
        ],
        payload_in_metadata=PAYLOAD_PREFIX + issuer.name,
        failed_status_in_metadata=FAILURE_PREFIX + issuer.name,
        clock_skew_seconds=issuer.clock_skew_s,
    )
    remote = issuer.remote_jwks
    if remote is not None:
        provider.remote_jwks.CopyFrom(
            jwt_pb2.RemoteJwks(
                http_uri=http_uri_pb2.HttpUri(
                    uri=remote.uri,
                    cluster=names.jwks_cluster(issuer.name),
                    timeout=ms(remote.fetch_timeout_ms),
                ),
                cache_duration=ms(remote.cache_duration_s * 1000),
            )
        )
    else:
        text = json.dumps(issuer.local_jwks, sort_keys=True, separators=(",", ":"))
        provider.local_jwks.CopyFrom(base_pb2.DataSource(inline_string=text))
    return provider


def jwt_filter(issuers: Sequence[JwtIssuer]) -> hcm_pb2.HttpFilter:
    """The ``jwt_authn`` filter for ``issuers`` (non-empty): one provider per issuer, one
    rule for every path that requires any of them or lets the request through unverified
    (see the module doc)."""
    if not issuers:
        raise ValueError("a jwt_authn filter needs at least one issuer")
    ordered = sorted(issuers, key=lambda issuer: issuer.name)
    requirement = jwt_pb2.JwtRequirement(
        requires_any=jwt_pb2.JwtRequirementOrList(
            requirements=[
                *(
                    jwt_pb2.JwtRequirement(provider_name=names.jwt_provider(issuer.name))
                    for issuer in ordered
                ),
                jwt_pb2.JwtRequirement(allow_missing_or_failed=empty_pb2.Empty()),
            ]
        )
    )
    config = jwt_pb2.JwtAuthentication(
        providers={names.jwt_provider(issuer.name): _provider(issuer) for issuer in ordered},
        rules=[
            jwt_pb2.RequirementRule(
                match=rc.RouteMatch(prefix="/"),
                requires=requirement,
            )
        ],
        stat_prefix="tiermesh",
    )
    return hcm_pb2.HttpFilter(name=JWT_AUTHN_FILTER, typed_config=pack(config))


def _jwks_cluster(issuer: JwtIssuer, connect_timeout_ms: int) -> cluster_pb2.Cluster:
    assert issuer.remote_jwks is not None
    host, port, tls = jwks_address(issuer.remote_jwks.uri)
    name = names.jwks_cluster(issuer.name)
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=host, port_value=port)
            )
        )
    )
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC if is_ip(host) else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=ms(connect_timeout_ms),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )
    if tls:
        validation = common_pb2.CertificateValidationContext(
            system_root_certs=common_pb2.CertificateValidationContext.SystemRootCerts(),
            match_typed_subject_alt_names=[
                common_pb2.SubjectAltNameMatcher(
                    san_type=(
                        common_pb2.SubjectAltNameMatcher.IP_ADDRESS
                        if is_ip(host)
                        else common_pb2.SubjectAltNameMatcher.DNS
                    ),
                    matcher=string_pb2.StringMatcher(exact=host),
                )
            ],
        )
        context = tls_pb2.UpstreamTlsContext(
            sni="" if is_ip(host) else host,
            common_tls_context=tls_pb2.CommonTlsContext(validation_context=validation),
        )
        cluster.transport_socket.CopyFrom(
            base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))
        )
    return cluster


def jwks_clusters(
    issuers: Sequence[JwtIssuer], connect_timeout_ms: int
) -> list[cluster_pb2.Cluster]:
    """One cluster per issuer with a remote key set, sorted by issuer name."""
    return [
        _jwks_cluster(issuer, connect_timeout_ms)
        for issuer in sorted(issuers, key=lambda issuer: issuer.name)
        if issuer.remote_jwks is not None
    ]
