"""xDS type URLs served by the library and the order in which they are pushed."""

from __future__ import annotations

from typing import Final

__all__ = [
    "CLUSTER",
    "DEPENDENT_TYPES",
    "ENDPOINT",
    "LISTENER",
    "PUSH_ORDER",
    "ROUTE",
    "SECRET",
    "SHORT_NAMES",
    "WILDCARD_TYPES",
]

_PREFIX: Final = "type.googleapis.com/"
CLUSTER: Final = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE: Final = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET: Final = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

#: Envoy warms clusters before listeners: CDS → EDS → LDS → RDS. Secrets are pushed right after
#: endpoints so that a cluster or listener referencing a new secret can finish warming.
PUSH_ORDER: Final = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)

#: Types whose SotW subscription is normally wildcard (all resources); the others are named.
WILDCARD_TYPES: Final = frozenset({CLUSTER, LISTENER})

#: When Envoy receives a changed cluster (listener) it builds it anew and warms it until
#: its endpoints (routes) arrive again, although the names it subscribes to are unchanged
#: and so nothing in its next request asks for them. A push of the key type therefore
#: re-sends the dependent type.
DEPENDENT_TYPES: Final = {CLUSTER: ENDPOINT, LISTENER: ROUTE}

SHORT_NAMES: Final = {
    CLUSTER: "cds",
    ENDPOINT: "eds",
    LISTENER: "lds",
    ROUTE: "rds",
    SECRET: "sds",
}
