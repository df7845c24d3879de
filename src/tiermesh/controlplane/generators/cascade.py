"""The confidence cascade: routes and the cluster of the node's cascade handler.

Envoy cannot judge a response body and ask again, so a plan route with ``cascade`` (on a
node whose settings name a :class:`~tiermesh.controlplane.model.CascadeSettings` handler,
and with a chain of two or more steps) compiles, per variant of the route (plain and
``/budget``), to:

- one **step route** per chain step, :func:`~tiermesh.controlplane.model.names.cascade_step_route`,
  matching the variant's headers plus the dynamic metadata
  :data:`~tiermesh.controlplane.api.CASCADE_STEP_METADATA` equal to ``<i>``, and sending
  to that step's own backend cluster (its breaker, outlier detection, TLS and API key
  apply), with the step's timeout and retries. Only the node's ext_authz server sets that
  metadata, and only for a step request carrying the handler's per-start secret (which it
  knows in-process; the secret is in no route, registration or config dump). A client
  that sets the step header itself matches no step route and gets the cascade as
  designed. Step routes remove the step and secret headers before going upstream and
  carry no rate limit: the client's request was counted once on the cascade route. They
  are ordinary routes, so the verifier checks them like any other.
- the **cascade route** itself (the variant's name), after its step routes: it sends to
  :data:`~tiermesh.controlplane.model.names.CASCADE_CLUSTER` (the handler on loopback) and
  overwrites two request headers the handler reads: the chain's length and the
  ``min_confidence``. Its timeout is the sum of the steps' timeouts; it has no retries
  (the handler walks the chain) and keeps the route's rate limit.

The handler asks each step back through the app listener with the client's headers plus
the step header (and the secret); a step request matches its step route, never the
cascade route (step routes come first, and any earlier route would have taken the
client's request).

**The secret never goes upstream**: on a node whose handler has one, every route that
forwards (:func:`strip_token`) removes ``x-tiermesh-cascade-token``, whoever set it,
except the cascade route: the handler reads it there to refuse a step request of its own
that came back to it (no step route matched), and drops a client's copy itself. Without
a secret (agents older than it) step routes match the step header alone, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2

from tiermesh.controlplane.api import CASCADE_STEP_METADATA, ChainStep, RoutePlan
from tiermesh.controlplane.generators._protos import ms, static_assignment
from tiermesh.controlplane.model import CascadeSettings, NodeModel, names

__all__ = [
    "cascade_cluster",
    "cascade_clusters",
    "node_uses_cascade",
    "step_matcher",
    "step_route",
    "strip_token",
    "to_handler",
    "uses_cascade",
]


def uses_cascade(node: NodeModel, plan_route: RoutePlan, steps: Sequence[ChainStep]) -> bool:
    """Does a variant of ``plan_route`` with ``steps`` compile to a cascade?"""
    return node.settings.cascade is not None and plan_route.cascade is not None and len(steps) > 1


def node_uses_cascade(node: NodeModel) -> bool:
    """Does any route of the node compile to a cascade (so the handler cluster is needed)?"""
    return any(
        uses_cascade(node, route, steps)
        for route in node.plan.routes
        for steps in (route.chain, route.budget_fallback)
    )


def _set(header: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=header, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def to_handler(
    chain_route: rc.Route, plan_route: RoutePlan, steps: Sequence[ChainStep]
) -> rc.Route:
    """The cascade route of a variant, derived from its plain chain route ``chain_route``
    (same name, match and rate limit) by sending it to the handler. Requires
    ``plan_route.cascade``; ``chain_route`` is not modified."""
    cascade = plan_route.cascade
    if cascade is None:
        raise ValueError(f"route {plan_route.name!r} has no cascade")
    route = rc.Route()
    route.CopyFrom(chain_route)
    route.route.CopyFrom(
        rc.RouteAction(
            cluster=names.CASCADE_CLUSTER,
            timeout=ms(sum(step.timeout_ms for step in steps)),
        )
    )
    route.request_headers_to_add.extend(
        [
            _set(names.CASCADE_CHAIN_HEADER, str(len(steps))),
            _set(names.CASCADE_THRESHOLD_HEADER, repr(cascade.min_confidence)),
        ]
    )
    return route


def step_matcher(step: int) -> metadata_pb2.MetadataMatcher:
    """The dynamic-metadata matcher of step ``step``'s routes: the node's ext_authz server
    said this is the handler's own request for step ``step`` (module docstring)."""
    namespace, key = CASCADE_STEP_METADATA
    return metadata_pb2.MetadataMatcher(
        filter=namespace,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=key)],
        value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=str(step))),
    )


def step_route(route: rc.Route) -> rc.Route:
    """Make ``route`` (a step's route, already matching :func:`step_matcher`) a step
    route: no rate limit, and the step and secret headers removed before going upstream.
    Modifies and returns ``route``."""
    route.ClearField("typed_per_filter_config")
    route.request_headers_to_remove.extend([names.CASCADE_STEP_HEADER, names.CASCADE_TOKEN_HEADER])
    return route


def strip_token(node: NodeModel, route: rc.Route) -> rc.Route:
    """Remove the secret header before ``route`` goes upstream, when ``node`` has a cascade
    handler and ``route`` forwards somewhere other than the handler (which reads it).
    Modifies and returns ``route``."""
    if (
        node.settings.cascade is None
        or not route.HasField("route")
        or route.route.cluster == names.CASCADE_CLUSTER
        or names.CASCADE_TOKEN_HEADER in route.request_headers_to_remove
    ):
        return route
    route.request_headers_to_remove.append(names.CASCADE_TOKEN_HEADER)
    return route


def cascade_cluster(settings: CascadeSettings, connect_timeout_ms: int) -> cluster_pb2.Cluster:
    """A static HTTP/1.1 cluster with the handler's one loopback address."""
    return cluster_pb2.Cluster(
        name=names.CASCADE_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=ms(connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        load_assignment=static_assignment(
            names.CASCADE_CLUSTER, settings.host, settings.port, settings.socket
        ),
    )


def cascade_clusters(node: NodeModel) -> list[cluster_pb2.Cluster]:
    """The handler's cluster when a route of ``node`` uses it; else none."""
    settings = node.settings.cascade
    if settings is None or not node_uses_cascade(node):
        return []
    return [cascade_cluster(settings, node.settings.connect_timeout_ms)]
