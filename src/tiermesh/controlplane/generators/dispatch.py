"""Dispatch of a large app route table: one route list per tenant.

Envoy tries a virtual host's ``routes`` in order and evaluates each route's header
matchers until one matches, so a request of the last tenant of a 500-route table is
checked against every route of the tenants before it (each a header lookup, on a table
too big for the CPU's caches on a busy machine); ``bench/route_cpu.py`` measures what
that costs per request against a plain Envoy.

:func:`tenant_dispatch` turns the table into the virtual host's ``matcher``: a tree whose
first node's input is the request header ``x-tiermesh-tenant`` and whose
``exact_match_map`` names, per tenant, the tenant's part of the table; ``on_no_match``
takes every other request. A part that is itself large is dispatched the same way on
``x-tiermesh-sensitivity`` (:data:`DISPATCH_HEADERS`); the leaves are ``RouteList``
actions.

- A route is *pinned* on a header by an exact, non-inverted matcher (to that value) or by
  ``present_match: false`` (to the header's absence).
- The part of value ``V`` is the table, in order, less the routes pinned on the header to
  anything but ``V``. The ``on_no_match`` part (header absent, or a value no route is
  pinned to) is the table less the routes pinned to a value.

Every route keeps its own match, so the first route of a list that matches a request is
the first route of the table that matches it: a route a list leaves out is pinned to
something the request does not carry and could not match. The table ends in the
catch-all 404, which is pinned to nothing, so every list ends with it and no request is
left without a route. Envoy's header input joins repeated headers with ``,`` as its
header matchers do.

Only parts of at least :data:`DISPATCH_MIN_ROUTES` routes with routes pinned to two or
more values are dispatched; smaller ones stay a list (a whole table that small stays a
plain ``routes`` list). The verifier models exactly this shape
(:mod:`tiermesh.controlplane.verify.route_tree`); any other matcher tree is a finding.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import http_inputs_pb2
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import matcher_pb2

from tiermesh.controlplane.api import MATCH_HEADERS
from tiermesh.controlplane.generators._protos import pack

__all__ = [
    "ABSENT",
    "ANY_VALUE_LIST",
    "DISPATCH_HEADERS",
    "DISPATCH_MIN_ROUTES",
    "pinned",
    "pinned_tenant",
    "tenant_dispatch",
]

DISPATCH_MIN_ROUTES = 64
"""Smallest part of a table that is dispatched; below it the scan costs a few µs."""

DISPATCH_HEADERS: tuple[str, ...] = (MATCH_HEADERS["tenant"],)
"""The headers dispatched on, outermost first. Only the tenant: a second level on
``x-tiermesh-sensitivity`` (each tenant's part split by label) measured no gain for a
request 90 routes into the first tenant's part (1.01x the CPU of one route list, within
this VM's noise) and made the route table 9 % bigger with many tenants (the shared
routes sit in every leaf), against 2 % for the tenant level alone."""

ANY_VALUE_LIST = "tiermesh/any"
"""Name of an ``on_no_match`` route list (requests no value's list takes)."""

ABSENT = ""
"""What :func:`pinned` answers for a route that requires the header to be absent."""


def pinned(route: rc.Route, header: str) -> str | None:
    """What ``route`` pins ``header`` to: the value of an exact, non-inverted matcher,
    :data:`ABSENT` for ``present_match: false``, None when it pins nothing."""
    for matcher in route.match.headers:
        if matcher.name != header or matcher.invert_match:
            continue
        kind = matcher.WhichOneof("header_match_specifier")
        if kind == "present_match" and not matcher.present_match:
            return ABSENT
        if kind != "string_match":
            continue
        string = matcher.string_match
        if string.WhichOneof("match_pattern") == "exact" and not string.ignore_case:
            return str(string.exact)
    return None


def pinned_tenant(route: rc.Route) -> str | None:
    """The tenant ``route`` is pinned to (:func:`pinned` on ``x-tiermesh-tenant``)."""
    return pinned(route, DISPATCH_HEADERS[0])


def _leaf(
    name: str, routes: Sequence[rc.Route], headers: Sequence[str]
) -> matcher_pb2.Matcher.OnMatch:
    nested = _dispatch(routes, headers)
    if nested is not None:
        return matcher_pb2.Matcher.OnMatch(matcher=nested)
    return matcher_pb2.Matcher.OnMatch(
        action=extension_pb2.TypedExtensionConfig(
            name=name, typed_config=pack(rc.RouteList(routes=routes))
        )
    )


def _dispatch(
    routes: Sequence[rc.Route],
    headers: Sequence[str],
    pins: Sequence[str | None] | None = None,
) -> matcher_pb2.Matcher | None:
    if not headers:
        return None
    header, rest = headers[0], headers[1:]
    if pins is None:
        pins = [pinned(route, header) for route in routes]
    values = list(dict.fromkeys(p for p in pins if p))
    if len(routes) < DISPATCH_MIN_ROUTES or len(values) < 2:
        return _dispatch(routes, rest)
    # One pass: a route pinned to a value joins that value's part; one pinned to nothing
    # joins every part (linear in routes plus shared routes x values, not routes x values).
    parts: dict[str, list[rc.Route]] = {value: [] for value in values}
    unpinned: list[rc.Route] = []
    for route, pin in zip(routes, pins, strict=True):
        if pin is None:
            for part in parts.values():
                part.append(route)
            unpinned.append(route)
        elif pin == ABSENT:
            unpinned.append(route)
        else:
            parts[pin].append(route)
    source = http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=header)
    return matcher_pb2.Matcher(
        matcher_tree=matcher_pb2.Matcher.MatcherTree(
            input=extension_pb2.TypedExtensionConfig(name=header, typed_config=pack(source)),
            exact_match_map=matcher_pb2.Matcher.MatcherTree.MatchMap(
                map={value: _leaf(value, part, rest) for value, part in parts.items()}
            ),
        ),
        on_no_match=_leaf(ANY_VALUE_LIST, unpinned, rest),
    )


def tenant_dispatch(
    routes: Sequence[rc.Route], tenants: Sequence[str | None] | None = None
) -> matcher_pb2.Matcher | None:
    """The dispatch tree of the table ``routes`` (module docstring), or None when the
    table stays a plain list. ``tenants``: :func:`pinned_tenant` of each route, when the
    caller knows it already (the route generator does: it put the matchers there);
    computed otherwise."""
    if tenants is not None and len(tenants) != len(routes):
        raise ValueError(f"{len(tenants)} tenants for {len(routes)} routes")
    return _dispatch(routes, DISPATCH_HEADERS, tenants)
