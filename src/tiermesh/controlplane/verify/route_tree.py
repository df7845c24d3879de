"""The routes of a virtual host, whether a list or the one matcher tree the verifier models.

A virtual host holds its routes either in ``routes`` or in a ``matcher`` tree. The only
tree modelled is the compiler's tenant dispatch
(:mod:`tiermesh.controlplane.generators.dispatch`): one node whose input is a request
header (``HttpRequestHeaderMatchInput``) with an ``exact_match_map`` whose every entry,
and the ``on_no_match``, is a ``RouteList`` action, without nested matchers or
``keep_matching``. Every route of every list is checked as a route of the table: a list
can only narrow which routes Envoy tries, never change what a route matches or does, so
what holds for each route holds for the tree.

Any other tree (another input, a prefix map, nested or custom matchers, a ``Route``
action, ``keep_matching``, an action that does not unpack) is named by
:func:`tree_problems` and contributes no routes: the verifier reports it as
unverifiable instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterator

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import http_inputs_pb2
from xds.type.matcher.v3 import matcher_pb2

__all__ = ["host_routes", "tree_problems"]

_HEADER_INPUT = http_inputs_pb2.HttpRequestHeaderMatchInput.DESCRIPTOR.full_name
_ROUTE_LIST = rc.RouteList.DESCRIPTOR.full_name


def _type_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def _on_match_problem(on_match: matcher_pb2.Matcher.OnMatch, where: str) -> str | None:
    if on_match.HasField("matcher"):
        return f"{where} holds a nested matcher"
    if on_match.keep_matching:
        return f"{where} keeps matching"
    if not on_match.HasField("action"):
        return f"{where} has no action"
    kind = _type_name(on_match.action.typed_config.type_url)
    if kind != _ROUTE_LIST:
        return f"{where} has an action of type {kind}"
    if not on_match.action.typed_config.Unpack(rc.RouteList()):
        return f"{where} has a RouteList that does not decode"
    return None


def tree_problems(host: rc.VirtualHost) -> Iterator[str]:
    """What in ``host``'s matcher tree the verifier does not model (phrases after
    ``virtual host 'name'``); nothing for a host without a tree or with the modelled one."""
    if not host.HasField("matcher"):
        return
    matcher = host.matcher
    if host.routes:
        yield "has both routes and a matcher tree"
    kind = matcher.WhichOneof("matcher_type")
    if kind != "matcher_tree":
        yield "routes by a matcher list" if kind else "has a matcher with neither list nor tree"
        return
    tree = matcher.matcher_tree
    kind = _type_name(tree.input.typed_config.type_url)
    if kind != _HEADER_INPUT:
        yield f"routes by a matcher tree on input {kind}"
    if tree.WhichOneof("tree_type") != "exact_match_map":
        yield f"routes by a matcher tree with {tree.WhichOneof('tree_type')}"
        return
    for key, on_match in sorted(tree.exact_match_map.map.items()):
        problem = _on_match_problem(on_match, f"matcher tree entry '{key}'")
        if problem is not None:
            yield problem
    if not matcher.HasField("on_no_match"):
        yield "has a matcher tree without on_no_match"
    else:
        problem = _on_match_problem(matcher.on_no_match, "matcher tree on_no_match")
        if problem is not None:
            yield problem


def _route_list(on_match: matcher_pb2.Matcher.OnMatch) -> list[rc.Route]:
    routes = rc.RouteList()
    if on_match.HasField("action") and on_match.action.typed_config.Unpack(routes):
        return list(routes.routes)
    return []


def _key(route: rc.Route) -> bytes:
    return bytes(route.SerializeToString(deterministic=True))


def host_routes(host: rc.VirtualHost) -> list[rc.Route]:
    """Every route of ``host`` as one list: its ``routes``, or the routes of its modelled
    matcher tree merged into a table that Envoy would serve the same way.

    The merge keeps the ``on_no_match`` list's routes (the ones every list shares) as
    anchors and puts, before each anchor, each tenant's routes that come before it in
    that tenant's list (tenants by name); a route of a list that is not the next
    anchor counts as the tenant's own, so nothing a list holds is left out. Routes pinned
    to different tenants match disjoint requests, so their relative order changes
    nothing. Only a tree without :func:`tree_problems` is read; another yields no routes
    (it is reported instead)."""
    if not host.HasField("matcher"):
        return list(host.routes)
    if any(True for _ in tree_problems(host)):
        return []
    anchors = _route_list(host.matcher.on_no_match)
    position = {_key(route): index for index, route in enumerate(anchors)}
    segments: list[list[rc.Route]] = [[] for _ in range(len(anchors) + 1)]
    for _tenant, on_match in sorted(host.matcher.matcher_tree.exact_match_map.map.items()):
        next_anchor = 0
        for route in _route_list(on_match):
            index = position.get(_key(route), -1)
            if index >= next_anchor:
                next_anchor = index + 1
            else:
                segments[next_anchor].append(route)
    merged: list[rc.Route] = []
    for index, segment in enumerate(segments):
        merged += segment
        if index < len(anchors):
            merged.append(anchors[index])
    return merged
