"""LDS: the loopback listener apps send their OpenAI-compatible requests to."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from tiermesh.controlplane.generators._protos import ads, pack
from tiermesh.controlplane.generators.authz import authz_filter
from tiermesh.controlplane.generators.egress import egress_listener
from tiermesh.controlplane.generators.mesh_tls import mesh_listeners
from tiermesh.controlplane.generators.usage import (
    MAX_BODY_BYTES,
    usage_access_log,
    usage_filter,
)
from tiermesh.controlplane.model import MeshModel, names

__all__ = ["RATE_LIMIT_FILTER", "generate"]

RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
"""Name of the local rate-limit filter; routes configure it in ``typed_per_filter_config``."""


def generate(model: MeshModel, node_id: str) -> list[listener_pb2.Listener]:
    """The app listener: HTTP connection manager, routes over RDS (ADS), and filters
    [ext_authz →] local rate limit (pass-through unless a route configures a bucket) →
    [usage Lua →] router, with a gRPC access log when ``settings.usage`` is set
    (:mod:`.usage`).

    ext_authz (only with ``settings.authz``) comes first, so both the rate-limit bucket
    and the route are those of the headers it set. A node without ``settings.authz``
    forwards nothing: its route table answers every request 503 (:mod:`.routes`), so no
    request reaches an upstream uninspected. Then one internal egress listener per
    credentialed backend (:mod:`.egress`), sorted by backend name, then the inbound mTLS
    listener when the node has ``settings.mesh`` (:mod:`.mesh_tls`).
    """
    node = model.node(node_id)
    settings = node.settings
    filters = [] if settings.authz is None else [authz_filter(settings.authz)]
    filters.append(
        hcm_pb2.HttpFilter(
            name=RATE_LIMIT_FILTER,
            typed_config=pack(local_rate_limit_pb2.LocalRateLimit(stat_prefix="tiermesh")),
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
