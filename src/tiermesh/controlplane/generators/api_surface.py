"""The API surface guard: only the catalog's paths and methods are routed.

App routes match on headers only (prefix ``/``), so without a guard ``GET /v1/files``, or
any path a provider exposes, would reach a cloud tier with the operator's API key. The app
route table therefore starts with

- :data:`PATH_ROUTE`: a ``:path`` (query string allowed) that is none of the surface's
  paths is answered 404 with :func:`not_served_body`;
- one ``tiermesh/api-method<path>`` route per path: a method the path does not accept is
  answered 405.

``:path`` is matched as the client sent it, before any normalisation, against an exact
allow-list, so encoded, doubled or dotted slashes and any other spelling are refused
rather than interpreted. Credentialed egress routes match the same allow-list
(:func:`path_matcher`), so a provider key is never injected on another path.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from tiermesh.controlplane.api import ApiEndpoint

__all__ = ["PATH_ROUTE", "guard_routes", "method_route", "not_served_body", "path_matcher"]

PATH_ROUTE = "tiermesh/api-path"
"""The route answering 404 to a path outside the API surface."""


def method_route(path: str) -> str:
    """Name of the route answering 405 to a method ``path`` does not accept."""
    return f"tiermesh/api-method{path}"


def not_served_body(api: Sequence[ApiEndpoint]) -> str:
    """Body of the 404 a path outside the surface gets: the surface itself."""
    served = ", ".join(f"{'|'.join(e.methods)} {e.path}" for e in api)
    return f"tiermesh: this path is not an API this mesh serves ({served})\n"


def _regex(pattern: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def _path_pattern(api: Sequence[ApiEndpoint]) -> str:
    paths = "|".join(endpoint.path.replace(".", r"\.") for endpoint in api)
    return rf"^(?:{paths})(?:\?.*)?$"


def path_matcher(api: Sequence[ApiEndpoint], *, invert: bool = False) -> rc.HeaderMatcher:
    """A ``:path`` matcher accepting exactly the surface's paths (any query string);
    ``invert`` accepts everything else."""
    return rc.HeaderMatcher(
        name=":path", string_match=_regex(_path_pattern(api)), invert_match=invert
    )


def _refuse(name: str, match: rc.RouteMatch, status: int, body: str) -> rc.Route:
    return rc.Route(
        name=name,
        match=match,
        direct_response=rc.DirectResponseAction(
            status=status, body=base_pb2.DataSource(inline_string=body)
        ),
    )


def guard_routes(api: Sequence[ApiEndpoint]) -> list[rc.Route]:
    """The routes that refuse what the surface does not serve (see the module docstring)."""
    outside = rc.RouteMatch(prefix="/", headers=[path_matcher(api, invert=True)])
    routes = [_refuse(PATH_ROUTE, outside, 404, not_served_body(api))]
    for endpoint in api:
        other_method = rc.HeaderMatcher(
            name=":method",
            string_match=_regex(f"^(?:{'|'.join(endpoint.methods)})$"),
            invert_match=True,
        )
        match = rc.RouteMatch(path=endpoint.path, headers=[other_method])
        body = f"tiermesh: {endpoint.path} accepts {', '.join(endpoint.methods)}\n"
        routes.append(_refuse(method_route(endpoint.path), match, 405, body))
    return routes
