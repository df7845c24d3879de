"""LDS: the loopback listener apps send their OpenAI-compatible requests to."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import wrappers_pb2

from tiermesh.controlplane.api import MATCH_HEADERS, RateLimit
from tiermesh.controlplane.generators._protos import ads, ms, pack
from tiermesh.controlplane.generators.authz import authz_filter
from tiermesh.controlplane.generators.egress import egress_listener
from tiermesh.controlplane.generators.jwt import JWT_AUTHN_FILTER, jwt_filter
from tiermesh.controlplane.generators.mesh_tls import mesh_listeners
from tiermesh.controlplane.generators.usage import (
    MAX_BODY_BYTES,
    usage_access_log,
    usage_filter,
)
from tiermesh.controlplane.model import AuthzSettings, MeshModel, NodeModel, names

__all__ = ["RATE_LIMIT_FILTER", "TENANT_DESCRIPTOR", "generate", "tenant_rate_limits"]

RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
"""Name of the local rate-limit filter; it holds every tenant's bucket (:func:`generate`)."""

TENANT_DESCRIPTOR = "tiermesh_tenant"
"""Descriptor key the rate-limit filter reads the tenant header into."""


def tenant_rate_limits(node: NodeModel) -> dict[str, RateLimit]:
    """Tenant -> its token bucket, from the node's plan routes (the first route of a
    tenant that names one; the policy gives all of a tenant's routes the same). A route
    for any tenant (``*``) has no bucket of its own."""
    limits: dict[str, RateLimit] = {}
    for route in node.plan.routes:
        tenant = route.match.tenant
        if route.rate_limit is not None and tenant != "*":
            limits.setdefault(tenant, route.rate_limit)
    return dict(sorted(limits.items()))


def _rate_limit_filter(node: NodeModel) -> local_rate_limit_pb2.LocalRateLimit:
    """The local rate-limit filter: one token bucket per limited tenant, shared by all of
    the tenant's routes and connections (descriptor ``tiermesh_tenant`` = the tenant
    header); requests of unlimited tenants, or without the header, pass."""
    limits = tenant_rate_limits(node)
    if not limits:
        return local_rate_limit_pb2.LocalRateLimit(stat_prefix="tiermesh")
    always = base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
        )
    )
    tenant_header = rc.RateLimit.Action.RequestHeaders(
        header_name=MATCH_HEADERS["tenant"], descriptor_key=TENANT_DESCRIPTOR
    )
    return local_rate_limit_pb2.LocalRateLimit(
        stat_prefix="tiermesh",
        filter_enabled=always,
        filter_enforced=always,
        local_rate_limit_per_downstream_connection=False,
        rate_limits=[rc.RateLimit(actions=[rc.RateLimit.Action(request_headers=tenant_header)])],
        descriptors=[
            ratelimit_pb2.LocalRateLimitDescriptor(
                entries=[
                    ratelimit_pb2.RateLimitDescriptor.Entry(key=TENANT_DESCRIPTOR, value=tenant)
                ],
                token_bucket=token_bucket_pb2.TokenBucket(
                    max_tokens=limit.max_tokens,
                    tokens_per_fill=wrappers_pb2.UInt32Value(value=limit.tokens_per_fill),
                    fill_interval=ms(limit.fill_interval_ms),
                ),
            )
            for tenant, limit in limits.items()
        ],
    )


def _authz_filters(model: MeshModel, settings: AuthzSettings) -> list[hcm_pb2.HttpFilter]:
    """ext_authz, preceded by ``jwt_authn`` (whose verdict the check carries) when the
    catalog names JWT issuers (:mod:`.jwt`)."""
    if not model.jwt_issuers:
        return [authz_filter(settings)]
    return [
        jwt_filter(model.jwt_issuers),
        authz_filter(settings, metadata_namespaces=(JWT_AUTHN_FILTER,)),
    ]


def generate(model: MeshModel, node_id: str) -> list[listener_pb2.Listener]:
    """The app listener: HTTP connection manager, routes over RDS (ADS), and filters
    [[jwt_authn →] ext_authz →] local rate limit (one bucket per limited tenant, see
    below) → [usage Lua →] router, with a gRPC access log when ``settings.usage`` is set
    (:mod:`.usage`); ``jwt_authn`` only when the catalog names JWT issuers (:mod:`.jwt`).

    ext_authz (only with ``settings.authz``) comes first, so both the rate-limit bucket
    and the route are those of the headers it set. Rate limits are per tenant, not per
    route: the filter's own ``rate_limits`` turn the ``x-tiermesh-tenant`` header into a
    descriptor, and each limited tenant has one descriptor with its token bucket, so all
    of a tenant's routes (and connections) on the node draw on one bucket; a tenant
    without a limit, or a request without the header, is not limited.

    A node without ``settings.authz`` forwards nothing: its route table answers every
    request 503 (:mod:`.routes`), so no request reaches an upstream uninspected. Then one
    internal egress listener per credentialed backend (:mod:`.egress`), sorted by backend
    name, then the inbound mTLS listener when the node has ``settings.mesh``
    (:mod:`.mesh_tls`).
    """
    node = model.node(node_id)
    settings = node.settings
    filters = [] if settings.authz is None else _authz_filters(model, settings.authz)
    filters.append(
        hcm_pb2.HttpFilter(
            name=RATE_LIMIT_FILTER,
            typed_config=pack(_rate_limit_filter(node)),
        )
    )
    if settings.usage is not None:
        # The usage filter reads the request bodies ext_authz reads, so the two agree.
        bound = MAX_BODY_BYTES if settings.authz is None else settings.authz.max_body_bytes
        filters.append(usage_filter(settings.usage, max_body_bytes=bound))
    filters += [
        hcm_pb2.HttpFilter(
            name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
        ),
    ]
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix="tiermesh_app",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=names.APP_ROUTES),
        http_filters=filters,
        access_log=[] if settings.usage is None else [usage_access_log(settings.usage)],
    )
    egress = [
        egress_listener(u, model.api) for u in node.upstreams if u.backend.credential is not None
    ]
    return [
        listener_pb2.Listener(
            name=names.APP_LISTENER,
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=settings.app_address, port_value=settings.app_port
                )
            ),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.http_connection_manager",
                            typed_config=pack(manager),
                        )
                    ]
                )
            ],
        ),
        *egress,
        *mesh_listeners(node),
    ]
