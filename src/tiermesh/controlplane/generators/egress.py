"""The egress listener of a credentialed backend: where its API key is added.

Envoy runs upstream HTTP filters of the *route's* cluster, and a chain route's cluster is
the aggregate, so a credential filter on the backend's own cluster would never run (and
one on the aggregate would hand the key to every member). Instead the backend's cluster
sends to an internal listener (``envoy_internal_address``, no socket) whose connection
manager runs ``envoy.filters.http.credential_injector`` with a generic credential from an
SDS secret, then routes to the real endpoint (:func:`~.clusters.egress_cluster`). Only
requests the aggregate (or a one-step route) sent to this backend cross it.

The key itself is never in this config: the filter names the SDS secret
:func:`~tiermesh.controlplane.model.names.credential_secret`, which :mod:`.secrets`
serves over ADS from the node settings' ``credentials``. Envoy needs the
``envoy.bootstrap.internal_listener`` bootstrap extension for these listeners.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import extension_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.credential_injector.v3 import credential_injector_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.injected_credentials.generic.v3 import generic_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from tiermesh.controlplane.api import OPENAI_API, ApiEndpoint
from tiermesh.controlplane.api.catalog import Credential
from tiermesh.controlplane.generators._protos import ads, ms, pack
from tiermesh.controlplane.generators.api_surface import path_matcher
from tiermesh.controlplane.model import Upstream, names

__all__ = ["CREDENTIAL_FILTER", "egress_listener"]

CREDENTIAL_FILTER = "envoy.filters.http.credential_injector"
"""Name of Envoy's credential injector HTTP filter."""


def _injector(upstream: str, credential: Credential) -> hcm_pb2.HttpFilter:
    generic = generic_pb2.Generic(
        credential=secret_pb2.SdsSecretConfig(
            name=names.credential_secret(upstream), sds_config=ads()
        ),
        header=credential.header,
    )
    config = credential_injector_pb2.CredentialInjector(
        overwrite=True,
        allow_request_without_credential=False,
        credential=extension_pb2.TypedExtensionConfig(
            name="envoy.http.injected_credentials.generic", typed_config=pack(generic)
        ),
    )
    return hcm_pb2.HttpFilter(name=CREDENTIAL_FILTER, typed_config=pack(config))


def egress_listener(
    upstream: Upstream, api: Sequence[ApiEndpoint] = OPENAI_API
) -> listener_pb2.Listener:
    """The internal listener of ``upstream`` (which must have a credential).

    Only the ``api`` surface's paths are routed (:func:`.api_surface.path_matcher`): the key
    is never sent with a request for another path, which gets Envoy's 404.

    Overwrites any credential header the app sent (``overwrite``), never forwards a
    request when the secret is missing (``allow_request_without_credential: false``),
    rewrites ``Host`` to the backend's host name, and sets no timeout of its own: the app
    route's timeouts, retries and hedge bound every request that reaches it.
    """
    backend = upstream.backend
    credential = backend.credential
    if credential is None:
        raise ValueError(f"backend {backend.name!r} has no credential")
    route = rc.Route(
        name=names.egress_listener(backend.name),
        match=rc.RouteMatch(prefix="/", headers=[path_matcher(api)]),
        route=rc.RouteAction(
            cluster=names.egress_cluster(upstream.name),
            timeout=ms(0),
            host_rewrite_literal=backend.endpoint.host,
        ),
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix="tiermesh_egress",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=route_pb2.RouteConfiguration(
            name=names.egress_listener(backend.name),
            virtual_hosts=[rc.VirtualHost(name="egress", domains=["*"], routes=[route])],
        ),
        http_filters=[
            _injector(upstream.name, credential),
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
            ),
        ],
    )
    return listener_pb2.Listener(
        name=names.egress_listener(backend.name),
        internal_listener=listener_pb2.Listener.InternalListenerConfig(),
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
    )
