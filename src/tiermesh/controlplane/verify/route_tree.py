"""The routes of a virtual host, whether a list or the one matcher tree the verifier models.

A virtual host holds its routes either in ``routes`` or in a ``matcher`` tree. The only
tree modelled is the compiler's dispatch
(:mod:`tiermesh.controlplane.generators.dispatch`): nodes whose input is a request header
(``HttpRequestHeaderMatchInput``) with an ``exact_match_map``, where every entry and the
``on_no_match`` is either a ``RouteList`` action or another node of this shape, never
``keep_matching``. Every route of every list is checked as a route of the table: a list
can only narrow which routes Envoy tries, never change what a route matches or does, so
what holds for each route holds for the tree.

Any other tree (another input, a prefix map, a custom matcher, a matcher list, a
``Route`` action, ``keep_matching``, a node without ``on_no_match``, an action that
does not unpack) is named by :func:`tree_problems` and contributes no routes: the
verifier reports it as unverifiable instead of guessing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import http_inputs_pb2
from xds.type.matcher.v3 import matcher_pb2

__all__ = ["HostTrees", "host_routes", "tree_problems"]

_HEADER_INPUT = http_inputs_pb2.HttpRequestHeaderMatchInput.DESCRIPTOR.full_name
_ROUTE_LIST = rc.RouteList.DESCRIPTOR.full_name


def _type_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def _on_match_problems(on_match: matcher_pb2.Matcher.OnMatch, where: str) -> Iterator[str]:
    if on_match.keep_matching:
        yield f"{where} keeps matching"
    if on_match.HasField("matcher"):
        yield from _node_problems(on_match.matcher, where)
        return
    if not on_match.HasField("action"):
        yield f"{where} has no action"
        return
    kind = _type_name(on_match.action.typed_config.type_url)
    if kind != _ROUTE_LIST:
        yield f"{where} has an action of type {kind}"
    elif not on_match.action.typed_config.Unpack(rc.RouteList()):
        yield f"{where} has a RouteList that does not decode"


def _node_problems(matcher: matcher_pb2.Matcher, where: str) -> Iterator[str]:
    kind = matcher.WhichOneof("matcher_type")
    if kind != "matcher_tree":
        yield f"{where} is a matcher list" if kind else f"{where} is neither a list nor a tree"
        return
    tree = matcher.matcher_tree
    source = _type_name(tree.input.typed_config.type_url)
    if source != _HEADER_INPUT:
        yield f"{where} reads input {source}"
    if tree.WhichOneof("tree_type") != "exact_match_map":
        yield f"{where} is a {tree.WhichOneof('tree_type')}"
        return
    for key, on_match in sorted(tree.exact_match_map.map.items()):
        yield from _on_match_problems(on_match, f"{where} entry '{key}'")
    if not matcher.HasField("on_no_match"):
        yield f"{where} has no on_no_match"
    else:
        yield from _on_match_problems(matcher.on_no_match, f"{where} on_no_match")


_Tree = tuple[tuple[str, ...], tuple[rc.Route, ...]]
"""What a matcher tree holds: (problems, merged routes)."""


def _read(matcher: matcher_pb2.Matcher) -> _Tree:
    problems = tuple(_node_problems(matcher, "matcher tree"))
    return problems, () if problems else tuple(_merged(matcher))


@functools.lru_cache(maxsize=4)
def _read_tree(encoded: bytes) -> _Tree:
    """(problems, merged routes) of one encoded matcher tree. A caller may ask for a
    table's routes several times; a tree of 1 000 tenants' lists takes longer to decode
    than to check, so each distinct tree is read once."""
    return _read(matcher_pb2.Matcher.FromString(encoded))


def _tree(host: rc.VirtualHost, trees: HostTrees | None) -> _Tree:
    if trees is not None:
        return trees.tree(host)
    return _read_tree(bytes(host.matcher.SerializeToString(deterministic=True)))


class HostTrees:
    """The matcher trees of one verification's virtual hosts, each read once.

    Hosts are known by identity (each one held, so its id stays unique): encoding a
    16 000-route tree to look it up by its bytes took a quarter of the time reading it
    did, and a verification asks for each table's routes five or six times. Sound while
    the hosts are not changed, as in a verification, which only reads. Not thread-safe:
    one per verification (:class:`~.inventory.Inventory` holds it).
    """

    __slots__ = ("_read",)

    def __init__(self) -> None:
        self._read: dict[int, tuple[rc.VirtualHost, _Tree]] = {}

    def tree(self, host: rc.VirtualHost) -> _Tree:
        """(problems, merged routes) of ``host``'s matcher tree (it must have one)."""
        known = self._read.get(id(host))
        if known is None or known[0] is not host:
            known = self._read[id(host)] = (host, _read(host.matcher))
        return known[1]


def tree_problems(host: rc.VirtualHost, trees: HostTrees | None = None) -> Iterator[str]:
    """What in ``host``'s matcher tree the verifier does not model (phrases after
    ``virtual host 'name'``, each naming where in the tree); nothing for a host without a
    tree or with the modelled one. ``trees``: the verification's, if any."""
    if not host.HasField("matcher"):
        return
    if host.routes:
        yield "has both routes and a matcher tree"
    yield from _tree(host, trees)[0]


def _on_match_routes(on_match: matcher_pb2.Matcher.OnMatch) -> list[rc.Route]:
    if on_match.HasField("matcher"):
        return _merged(on_match.matcher)
    routes = rc.RouteList()
    if on_match.HasField("action") and on_match.action.typed_config.Unpack(routes):
        return list(routes.routes)
    return []


def _key(route: rc.Route) -> bytes:
    return bytes(route.SerializeToString(deterministic=True))


def _merged(matcher: matcher_pb2.Matcher) -> list[rc.Route]:
    """One node's routes as one table: the ``on_no_match`` routes (the ones every part
    shares) as anchors, and before each anchor each part's routes that come before it in
    that part (parts by key); a route of a part that is not the next anchor counts as the
    part's own, so nothing a part holds is left out."""
    anchors = _on_match_routes(matcher.on_no_match)
    # Routes are compared whole, but only those named like an anchor are serialized.
    named: dict[str, dict[bytes, int]] = {}
    for index, route in enumerate(anchors):
        named.setdefault(route.name, {}).setdefault(_key(route), index)
    segments: list[list[rc.Route]] = [[] for _ in range(len(anchors) + 1)]
    for _value, on_match in sorted(matcher.matcher_tree.exact_match_map.map.items()):
        next_anchor = 0
        for route in _on_match_routes(on_match):
            same_name = named.get(route.name)
            index = -1 if same_name is None else same_name.get(_key(route), -1)
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


def host_routes(host: rc.VirtualHost, trees: HostTrees | None = None) -> list[rc.Route]:
    """Every route of ``host`` as one list: its ``routes``, or the routes of its modelled
    matcher tree merged, node by node, into a table that Envoy serves the same way.
    Routes pinned to different values of a node's header match disjoint requests, so
    their relative order changes nothing. Only a tree without :func:`tree_problems` is
    read; another yields no routes (it is reported instead). The routes of a tree are
    shared between calls: read them, do not change them. ``trees``: the verification's,
    if any."""
    if not host.HasField("matcher"):
        return list(host.routes)
    if host.routes:
        return []
    return list(_tree(host, trees)[1])
