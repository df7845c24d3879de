"""Envoy resource names derived from plan content: deterministic, readable, collision-free.

Catalog names match ``[a-z0-9][a-z0-9_-]*``; the separators used here (``|``, ``/``)
never occur in them, so a derived name cannot collide with a backend's.
"""

from __future__ import annotations

from collections.abc import Sequence

from tiermesh.controlplane import api as _api

__all__ = [
    "APP_LISTENER",
    "APP_ROUTES",
    "AUTHZ_CLUSTER",
    "BATCH_CLUSTER",
    "BUDGET_EXHAUSTED",
    "BUDGET_HEADER",
    "CASCADE_CHAIN_HEADER",
    "CASCADE_CLUSTER",
    "CASCADE_STEPS_HEADER",
    "CASCADE_STEP_HEADER",
    "CASCADE_THRESHOLD_HEADER",
    "CASCADE_TOKEN_HEADER",
    "FIRST_BACKEND_KEY",
    "ROUTE_METADATA",
    "TIER_HEADER",
    "TRUST_BUNDLE_SECRET",
    "UNMATCHED_ROUTE",
    "cascade_step_route",
    "chain_cluster",
    "credential_secret",
    "egress_cluster",
    "egress_listener",
    "jwks_cluster",
    "jwt_provider",
    "upstream_cluster",
]

APP_LISTENER = "tiermesh-app"
"""The loopback listener apps send their requests to."""
APP_ROUTES = "tiermesh-app"
"""The RouteConfiguration of the app listener (served over RDS)."""
AUTHZ_CLUSTER = "tiermesh|authz"
"""Cluster of the node's ext_authz server (``|`` keeps it apart from backend names)."""
BATCH_CLUSTER = "tiermesh|batch"
"""Cluster of the node's batch service (``/v1/files``, ``/v1/batches``) on its Unix socket."""
TRUST_BUNDLE_SECRET = "tiermesh-spiffe-bundle"  # noqa: S105 - a resource name, not a secret
"""SDS secret holding the SPIFFE trust bundle upstream SAN checks validate against."""
BUDGET_HEADER = "x-tiermesh-budget"
"""Request header the request-time policy sets once the tenant's budget is spent."""
BUDGET_EXHAUSTED = "exhausted"
"""Value of :data:`BUDGET_HEADER` that selects a route's budget fallback chain."""
ROUTE_METADATA = "tiermesh"
"""Route metadata namespace of compiled chain routes."""
FIRST_BACKEND_KEY = "first_backend"
"""Key in :data:`ROUTE_METADATA`: the backend of the route's first chain step."""
TIER_HEADER = "x-tiermesh-tier"
"""Response header naming the tier of the backend that answered."""
UNMATCHED_ROUTE = "tiermesh/unmatched"
"""The app route table's last route: a request no plan route matches gets a 404 naming why."""
CASCADE_CLUSTER = "tiermesh|cascade"
"""Cluster of the node's confidence cascade handler (loopback, on the node)."""
CASCADE_STEP_HEADER = _api.CASCADE_STEP_HEADER
"""Request header the cascade handler sets on each step it asks (``0`` is the first);
removed by the per-step routes, which match on ext_authz's metadata instead
(:data:`~tiermesh.controlplane.api.CASCADE_STEP_METADATA`)."""
CASCADE_TOKEN_HEADER = "x-tiermesh-cascade-token"  # noqa: S105 - a header name
"""Request header the cascade handler sets on each step it asks: its per-start secret,
known only to the agent process (its ext_authz server checks it); no route lets it go
upstream."""
CASCADE_CHAIN_HEADER = "x-tiermesh-cascade-chain"
"""Request header a cascade route adds for the handler: how many steps its chain has."""
CASCADE_THRESHOLD_HEADER = "x-tiermesh-cascade-min-confidence"
"""Request header a cascade route adds for the handler: the route's ``min_confidence``."""
CASCADE_STEPS_HEADER = "x-tiermesh-cascade-steps"
"""Response header of a cascade answer: how many steps were asked."""


def upstream_cluster(backend: str) -> str:
    """Cluster of one backend: the backend's name."""
    return backend


def chain_cluster(members: Sequence[str]) -> str:
    """Aggregate cluster that fails over through ``members`` (upstream cluster names) in order."""
    return "chain|" + "|".join(members)


def egress_listener(backend: str) -> str:
    """Internal listener a credentialed backend's cluster sends to; it adds the API key."""
    return f"egress|{backend}"


def egress_cluster(backend: str) -> str:
    """The cluster that really connects to a credentialed backend (behind its egress)."""
    return f"direct|{backend}"


def credential_secret(backend: str) -> str:
    """SDS generic secret holding the credential header value of ``backend``'s requests."""
    return f"tiermesh-credential-{backend}"


def cascade_step_route(route: str, step: int) -> str:
    """Route that sends step ``step`` (from 0) of cascade route ``route`` to its cluster."""
    return f"{route}/cascade/{step}"


def jwt_provider(issuer: str) -> str:
    """Name of the ``jwt_authn`` provider of one catalog JWT issuer: the issuer's name."""
    return issuer


def jwks_cluster(issuer: str) -> str:
    """Cluster Envoy fetches one JWT issuer's remote key set through."""
    return f"jwks|{issuer}"
