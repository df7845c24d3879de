"""Tenant dispatch: a large app route table as one route list per tenant.

Envoy tries a virtual host's ``routes`` in order and evaluates each route's header
matchers until one matches, so a request of the last tenant of a 500-route table is
checked against every route of the tenants before it (each a header lookup, on a table
too big for the CPU's caches on a busy machine): measured with ``bench/route_cpu.py``,
that scan is most of what the compiled route path costs beyond a plain Envoy.

:func:`tenant_dispatch` turns the table into the virtual host's ``matcher``: a tree of one
node whose input is the request header ``x-tiermesh-tenant`` and whose ``exact_match_map``
names, per tenant, a ``RouteList`` action; ``on_no_match`` is another ``RouteList``.

- The list of tenant ``T`` is the table, in order, less the routes pinned (by an exact,
  non-inverted ``x-tiermesh-tenant`` matcher) to another tenant.
- The ``on_no_match`` list (no tenant header, or a value no route is pinned to) is the
  table less every pinned route.

Every route keeps its own match, its tenant matcher included, so the first route of a
list that matches a request is the first route of the table that matches it: a route a
list leaves out is pinned to a tenant the request does not carry and could not match.
The table ends in the catch-all 404, which has no tenant matcher, so every list ends
with it and no request is left without a route. Envoy's header input joins repeated
headers with ``,`` as its header matchers do.

Only tables of at least :data:`DISPATCH_MIN_ROUTES` routes with routes pinned to two or
more tenants are dispatched; smaller ones stay a plain ``routes`` list. The verifier
models exactly this shape (:mod:`tiermesh.controlplane.verify.route_tree`); any other
matcher tree is a finding.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import http_inputs_pb2
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import matcher_pb2

from tiermesh.controlplane.api import MATCH_HEADERS
from tiermesh.controlplane.generators._protos import pack

__all__ = ["ANY_TENANT_LIST", "DISPATCH_MIN_ROUTES", "pinned_tenant", "tenant_dispatch"]

DISPATCH_MIN_ROUTES = 64
"""Smallest table that is dispatched by tenant; below it the scan costs a few µs."""

ANY_TENANT_LIST = "tiermesh/any-tenant"
"""Name of the ``on_no_match`` route list (requests no tenant's list takes)."""

_TENANT = MATCH_HEADERS["tenant"]


def pinned_tenant(route: rc.Route) -> str | None:
    """The tenant an exact, non-inverted ``x-tiermesh-tenant`` matcher of ``route`` pins
    it to; None when it has no such matcher."""
    for matcher in route.match.headers:
        if matcher.name != _TENANT or matcher.invert_match:
            continue
        if matcher.WhichOneof("header_match_specifier") != "string_match":
            continue
        string = matcher.string_match
        if string.WhichOneof("match_pattern") == "exact" and not string.ignore_case:
            return str(string.exact)
    return None


def _route_list(name: str, routes: Sequence[rc.Route]) -> matcher_pb2.Matcher.OnMatch:
    return matcher_pb2.Matcher.OnMatch(
        action=extension_pb2.TypedExtensionConfig(
            name=name, typed_config=pack(rc.RouteList(routes=routes))
        )
    )


def tenant_dispatch(routes: Sequence[rc.Route]) -> matcher_pb2.Matcher | None:
    """The tenant dispatch tree of the table ``routes`` (module docstring), or None when
    the table stays a plain list."""
    pinned = [pinned_tenant(route) for route in routes]
    tenants = list(dict.fromkeys(t for t in pinned if t is not None))
    if len(routes) < DISPATCH_MIN_ROUTES or len(tenants) < 2:
        return None
    lists = {
        tenant: _route_list(
            tenant, [r for r, t in zip(routes, pinned, strict=True) if t in (None, tenant)]
        )
        for tenant in tenants
    }
    header = http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=_TENANT)
    return matcher_pb2.Matcher(
        matcher_tree=matcher_pb2.Matcher.MatcherTree(
            input=extension_pb2.TypedExtensionConfig(name=_TENANT, typed_config=pack(header)),
            exact_match_map=matcher_pb2.Matcher.MatcherTree.MatchMap(map=lists),
        ),
        on_no_match=_route_list(
            ANY_TENANT_LIST, [r for r, t in zip(routes, pinned, strict=True) if t is None]
        ),
    )
