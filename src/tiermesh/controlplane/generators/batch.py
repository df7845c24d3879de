"""The batch lane on the app listener: routes and the cluster of the node's batch service.

On a node whose settings name a :class:`~tiermesh.controlplane.model.BatchSettings`
service, the app route table starts with one route per
:data:`~tiermesh.controlplane.api.surface.BATCH_API` entry, before the API surface guard:
the exact method, and the path (without query string) matched as a whole by a regular
expression in which ``{id}`` is :data:`~tiermesh.controlplane.api.surface.BATCH_ID_PATTERN`
— a path with any other character, an encoded or doubled slash, or one more segment
matches no batch route and is refused by the guard like any path outside the surface.
They send to :data:`~tiermesh.controlplane.model.names.BATCH_CLUSTER`, the service's Unix
socket, with no retries (a submission is not idempotent) and a timeout long enough to
decide and queue a large file.

The listener's ext_authz runs on these requests like on any other: the tenant is
authenticated, the body inspected and the decision recorded, and the service reads the
tenant and label ext_authz set. Without a batch service no route is compiled: the paths
stay outside the surface (404), never forwarded to a backend.
"""

from __future__ import annotations

import re

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from tiermesh.controlplane.api.surface import BATCH_API, BATCH_ID_PATTERN
from tiermesh.controlplane.generators._protos import ms, static_assignment
from tiermesh.controlplane.model import NodeModel, names

__all__ = ["BATCH_TIMEOUT_MS", "batch_clusters", "batch_path_regex", "batch_route", "batch_routes"]

BATCH_TIMEOUT_MS = 300_000
"""Route timeout of the batch paths: deciding and queueing every line of a large file."""


def batch_route(method: str, path: str) -> str:
    """Name of the route sending ``method path`` to the batch service."""
    return f"tiermesh/batch/{method}{path}"


def batch_path_regex(path: str) -> str:
    """The whole-path regular expression of a :data:`BATCH_API` path template."""
    return re.escape(path).replace(re.escape("{id}"), BATCH_ID_PATTERN)


def batch_routes(node: NodeModel) -> list[rc.Route]:
    """The batch routes of ``node`` (see the module docstring); none without a service."""
    if node.settings.batch is None:
        return []
    routes = []
    for method, path in BATCH_API:
        match = rc.RouteMatch(
            safe_regex=regex_pb2.RegexMatcher(regex=batch_path_regex(path)),
            headers=[
                rc.HeaderMatcher(
                    name=":method", string_match=string_pb2.StringMatcher(exact=method)
                )
            ],
        )
        routes.append(
            rc.Route(
                name=batch_route(method, path),
                match=match,
                route=rc.RouteAction(cluster=names.BATCH_CLUSTER, timeout=ms(BATCH_TIMEOUT_MS)),
            )
        )
    return routes


def batch_clusters(node: NodeModel) -> list[cluster_pb2.Cluster]:
    """The batch service's static HTTP/1.1 cluster on its Unix socket; none without one."""
    settings = node.settings.batch
    if settings is None:
        return []
    return [
        cluster_pb2.Cluster(
            name=names.BATCH_CLUSTER,
            type=cluster_pb2.Cluster.STATIC,
            connect_timeout=ms(node.settings.connect_timeout_ms),
            lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
            load_assignment=static_assignment(names.BATCH_CLUSTER, "", 0, settings.socket),
        )
    ]
