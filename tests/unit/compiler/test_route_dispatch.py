"""Tenant dispatch of a large app route table (generators/dispatch.py) and how the
verifier reads it (verify/route_tree.py): same first match, every route verified, and
any other matcher tree a finding."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from xds.type.matcher.v3 import matcher_pb2

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tiermesh.controlplane.api import MATCH_HEADERS, Catalog, Plan
from tiermesh.controlplane.generators import compile_snapshot, dispatch, routes
from tiermesh.controlplane.model import CascadeSettings, MeshModel, names
from tiermesh.controlplane.verify import Finding, verify_snapshot
from tiermesh.controlplane.verify.http_filters import EXT_AUTHZ
from tiermesh.controlplane.verify.matching import may_match
from tiermesh.controlplane.verify.route_tree import host_routes
from tiermesh.xds import Snapshot, typeurls

TENANT = MATCH_HEADERS["tenant"]
RESTRICTED = "acme.restricted.*.*"


def _host(plan: Plan) -> rc.VirtualHost:
    (config,) = routes.generate(MeshModel.build([plan], {EDGE: EDGE_SETTINGS}), EDGE)
    (host,) = config.virtual_hosts
    return host


def _lists(
    matcher: matcher_pb2.Matcher, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], list[rc.Route]]:
    """Every route list of a dispatch tree by its path of values ("" for on_no_match)."""
    found: dict[tuple[str, ...], list[rc.Route]] = {}
    entries = [*matcher.matcher_tree.exact_match_map.map.items(), ("", matcher.on_no_match)]
    for key, on_match in entries:
        if on_match.HasField("matcher"):
            found.update(_lists(on_match.matcher, (*path, key)))
            continue
        route_list = rc.RouteList()
        assert on_match.action.typed_config.Unpack(route_list)
        found[(*path, key)] = list(route_list.routes)
    return found


def _pick(
    lists: dict[tuple[str, ...], list[rc.Route]], request: dict[str, str | None]
) -> list[rc.Route]:
    """The list Envoy's tree takes for ``request``."""
    path: tuple[str, ...] = ()
    for header in dispatch.DISPATCH_HEADERS:
        if any(key[: len(path)] == path and len(key) > len(path) for key in lists):
            value = request.get(header) or ""
            known = {
                key[len(path)] for key in lists if key[: len(path)] == path and len(key) > len(path)
            }
            path = (*path, value if value in known else "")
    return lists[path]


@pytest.fixture(scope="module")
def flat(edge_plan: Plan) -> list[rc.Route]:
    """The demo edge table as one list (dispatch off)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "DISPATCH_MIN_ROUTES", 10**9)
        host = _host(edge_plan)
    assert not host.HasField("matcher")
    return list(host.routes)


def test_the_demo_table_is_one_route_list_per_tenant(edge_plan: Plan, flat: list[rc.Route]) -> None:
    host = _host(edge_plan)
    assert not host.routes
    assert host.matcher.matcher_tree.input.name == TENANT
    header_input = http_inputs_pb2.HttpRequestHeaderMatchInput()
    assert host.matcher.matcher_tree.input.typed_config.Unpack(header_input)
    assert header_input.header_name == TENANT
    lists = _lists(host.matcher)
    assert sorted({key[0] for key in lists}) == ["", "acme", "globex", "initech"]
    sensitivity = MATCH_HEADERS["sensitivity"]
    for key, listed in lists.items():
        tenant = key[0]
        wanted = [
            r
            for r in flat
            if dispatch.pinned(r, TENANT) in ((None, tenant) if tenant else (None, ""))
            and (
                len(key) < 2
                or dispatch.pinned(r, sensitivity) in ((None, key[1]) if key[1] else (None, ""))
            )
        ]
        assert listed == wanted, key
        assert listed[-1].name == names.UNMATCHED_ROUTE
        assert listed[0].name == "tiermesh/api-path"
    assert all(len(key) == 1 for key in lists)
    assert len(lists[("globex",)]) < len(flat) / 2
    # The verifier reads back every route of the table, each once.
    merged = host_routes(host)
    assert sorted(r.SerializeToString(deterministic=True) for r in merged) == sorted(
        r.SerializeToString(deterministic=True) for r in flat
    )


def _path_holds(match: rc.RouteMatch, path: str) -> bool:
    kind = match.WhichOneof("path_specifier")
    if kind == "prefix":
        return path.startswith(match.prefix)
    if kind == "path":
        return path.split("?", 1)[0] == match.path
    raise AssertionError(f"path specifier {kind} not modelled here")


def _first(table: Sequence[rc.Route], request: dict[str, str | None]) -> str:
    """Name of the first route of ``table`` Envoy would pick for ``request`` (no dynamic
    metadata: step routes never match a client's request)."""
    for route in table:
        if not _path_holds(route.match, request[":path"] or ""):
            continue
        if route.match.dynamic_metadata:
            continue
        if all(may_match([m], m.name, request.get(m.name)) for m in route.match.headers):
            return route.name
    return "(none)"


def test_every_request_meets_the_same_first_route(edge_plan: Plan, flat: list[rc.Route]) -> None:
    host = _host(edge_plan)
    lists = _lists(host.matcher)
    merged = host_routes(host)
    values: dict[str, list[str | None]] = {
        TENANT: ["acme", "globex", "initech", "umbrella", None],
        MATCH_HEADERS["sensitivity"]: ["public", "internal", "restricted", "secret", None],
        MATCH_HEADERS["task"]: ["chat", "cascade", "reasoning", None],
        MATCH_HEADERS["model"]: ["fast", "smart", None],
        names.BUDGET_HEADER: [names.BUDGET_EXHAUSTED, None],
        ":method": ["POST", "GET"],
        ":path": ["/v1/chat/completions", "/v1/models?x=1", "/v1/files"],
    }
    checked = 0
    for combination in itertools.product(*values.values()):
        request = dict(zip(values, combination, strict=True))
        expected = _first(flat, request)
        assert _first(_pick(lists, request), request) == expected, request
        assert _first(merged, request) == expected, request
        checked += 1
    assert checked == 5 * 5 * 4 * 3 * 2 * 2 * 3


def test_the_generator_knows_each_routes_tenant(
    edge_plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tenants the route generator hands the dispatch are what the routes' matchers
    pin (API guard, cascade and refusal routes included), and a tree built
    from them is the tree built from the matchers."""
    seen: list[tuple[list[rc.Route], list[str | None]]] = []
    real = dispatch.tenant_dispatch

    def spy(
        table: Sequence[rc.Route], tenants: Sequence[str | None] | None = None
    ) -> matcher_pb2.Matcher | None:
        assert tenants is not None
        seen.append((list(table), list(tenants)))
        return real(table, tenants)

    monkeypatch.setattr(dispatch, "tenant_dispatch", spy)
    settings = replace(EDGE_SETTINGS, cascade=CascadeSettings(port=7777))
    (config,) = routes.generate(MeshModel.build([edge_plan], {EDGE: settings}), EDGE)
    ((table, tenants),) = seen
    assert tenants == [dispatch.pinned_tenant(route) for route in table]
    assert {None, "acme", "globex"} <= set(tenants)
    assert any(route.match.dynamic_metadata for route in table)  # cascade step routes
    assert config.virtual_hosts[0].matcher == real(table)
    with pytest.raises(ValueError, match="tenants for"):
        real(table, tenants[1:])


def test_small_tables_stay_a_list(edge_plan: Plan) -> None:
    small = edge_plan.model_copy(update={"routes": edge_plan.routes[:4]})
    host = _host(small)
    assert not host.HasField("matcher")
    assert len(host.routes) >= 4


def test_one_tenant_is_not_dispatched(edge_plan: Plan) -> None:
    acme = tuple(r for r in edge_plan.routes if r.match.tenant == "acme")
    host = _host(edge_plan.model_copy(update={"routes": acme}))
    assert len(host.routes) >= dispatch.DISPATCH_MIN_ROUTES
    assert not host.HasField("matcher")


def test_a_second_header_splits_each_large_part(
    edge_plan: Plan, flat: list[rc.Route], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shape allows a further level (not compiled today: DISPATCH_HEADERS)."""
    monkeypatch.setattr(dispatch, "DISPATCH_HEADERS", (TENANT, MATCH_HEADERS["sensitivity"]))
    host = _host(edge_plan)
    lists = _lists(host.matcher)
    # Restricted routes are pinned to no label (their regex takes a missing one too),
    # so they sit in every part of their tenant.
    assert ("acme", "public") in lists
    assert ("acme", "internal") in lists
    assert ("acme", "restricted") not in lists
    for listed in lists.values():
        assert listed[-1].name == names.UNMATCHED_ROUTE
    assert sorted(r.SerializeToString(deterministic=True) for r in host_routes(host)) == sorted(
        r.SerializeToString(deterministic=True) for r in flat
    )


# ------------------------------------------------------------------------ the verifier


Tables = dict[str, route_pb2.RouteConfiguration]


def _verify_after(
    catalog: Catalog, edge_model: MeshModel, change: Callable[[Tables], None]
) -> list[Finding]:
    snapshot = compile_snapshot(edge_model, EDGE)
    resources = {
        type_url: [r.decode() for r in snapshot.encoded(type_url).values()]
        for type_url in typeurls.PUSH_ORDER
    }
    change({config.name: config for config in resources[typeurls.ROUTE]})
    return verify_snapshot(Snapshot.from_resources(resources), catalog)


def _app_tree(tables: Tables) -> matcher_pb2.Matcher:
    return tables[names.APP_ROUTES].virtual_hosts[0].matcher


def test_the_compiled_tree_verifies_clean(catalog: Catalog, edge_model: MeshModel) -> None:
    assert _verify_after(catalog, edge_model, lambda tables: None) == []


def test_a_nested_dispatch_verifies_clean(
    catalog: Catalog, edge_model: MeshModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "DISPATCH_HEADERS", (TENANT, MATCH_HEADERS["sensitivity"]))
    assert _verify_after(catalog, edge_model, lambda tables: None) == []


def test_a_route_in_one_tenants_list_is_verified(catalog: Catalog, edge_model: MeshModel) -> None:
    def change(tables: Tables) -> None:
        on_match = _app_tree(tables).matcher_tree.exact_match_map.map["acme"]
        route_list = rc.RouteList()
        assert on_match.action.typed_config.Unpack(route_list)
        (route,) = [r for r in route_list.routes if r.name == RESTRICTED]
        route.route.cluster = "frontier-us"
        on_match.action.typed_config.Pack(route_list)

    found = _verify_after(catalog, edge_model, change)
    assert {(f.kind, f.route, f.cluster) for f in found} == {
        ("restricted-egress", RESTRICTED, "frontier-us"),
        ("residency", RESTRICTED, "frontier-us"),
    }


def test_ext_authz_disabled_on_a_route_in_one_tenants_list_is_a_finding(
    catalog: Catalog, edge_model: MeshModel
) -> None:
    public = "globex.public.*.*"

    def change(tables: Tables) -> None:
        on_match = _app_tree(tables).matcher_tree.exact_match_map.map["globex"]
        route_list = rc.RouteList()
        assert on_match.action.typed_config.Unpack(route_list)
        (route,) = [r for r in route_list.routes if r.name == public]
        route.typed_per_filter_config[EXT_AUTHZ].Pack(ext_authz_pb2.ExtAuthzPerRoute(disabled=True))
        on_match.action.typed_config.Pack(route_list)

    found = _verify_after(catalog, edge_model, change)
    assert [(f.kind, f.route) for f in found] == [("no-authz", public)]


def _prefix_map(tree: matcher_pb2.Matcher) -> None:
    entries = dict(tree.matcher_tree.exact_match_map.map)
    tree.matcher_tree.prefix_match_map.map["a"].CopyFrom(entries["acme"])


def _query_input(tree: matcher_pb2.Matcher) -> None:
    query = http_inputs_pb2.HttpRequestQueryParamMatchInput(query_param="tenant")
    tree.matcher_tree.input.typed_config.Pack(query)


def _route_action(tree: matcher_pb2.Matcher) -> None:
    assert tree.on_no_match.HasField("action")
    tree.on_no_match.action.typed_config.Pack(rc.Route(name="anything"))


def _nested_list(tree: matcher_pb2.Matcher) -> None:
    entry = tree.matcher_tree.exact_match_map.map["acme"]
    entry.ClearField("matcher")
    entry.matcher.matcher_list.SetInParent()


def _deep_query(tree: matcher_pb2.Matcher) -> None:
    """initech's list moved under a nested node that reads a query parameter."""
    entry = tree.matcher_tree.exact_match_map.map["initech"]
    nested = matcher_pb2.Matcher()
    query = http_inputs_pb2.HttpRequestQueryParamMatchInput(query_param="sensitivity")
    nested.matcher_tree.input.typed_config.Pack(query)
    nested.matcher_tree.exact_match_map.SetInParent()
    nested.on_no_match.CopyFrom(entry)
    entry.Clear()
    entry.matcher.CopyFrom(nested)


def _keep_matching(tree: matcher_pb2.Matcher) -> None:
    tree.matcher_tree.exact_match_map.map["globex"].keep_matching = True


def _no_fallback(tree: matcher_pb2.Matcher) -> None:
    tree.ClearField("on_no_match")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_prefix_map, "matcher tree is a prefix_match_map"),
        (
            _query_input,
            "matcher tree reads input envoy.type.matcher.v3.HttpRequestQueryParamMatchInput",
        ),
        (
            _route_action,
            "matcher tree on_no_match has an action of type envoy.config.route.v3.Route",
        ),
        (_nested_list, "matcher tree entry 'acme' is a matcher list"),
        (_keep_matching, "matcher tree entry 'globex' keeps matching"),
        (_no_fallback, "matcher tree has no on_no_match"),
        (
            _deep_query,
            "matcher tree entry 'initech' reads input "
            "envoy.type.matcher.v3.HttpRequestQueryParamMatchInput",
        ),
    ],
)
def test_other_matcher_trees_are_findings(
    catalog: Catalog,
    edge_model: MeshModel,
    change: Callable[[matcher_pb2.Matcher], None],
    problem: str,
) -> None:
    found = _verify_after(catalog, edge_model, lambda tables: change(_app_tree(tables)))
    message = f"route config '{names.APP_ROUTES}' virtual host 'app' {problem}"
    assert message in [f.message for f in found]
    assert all(f.kind == "unverifiable" or f.message != message for f in found)


def test_a_table_with_both_routes_and_a_tree_is_a_finding(
    catalog: Catalog, edge_model: MeshModel
) -> None:
    def change(tables: Tables) -> None:
        tables[names.APP_ROUTES].virtual_hosts[0].routes.add(
            name="extra",
            match=rc.RouteMatch(prefix="/"),
            route=rc.RouteAction(cluster="frontier-us"),
        )

    found = _verify_after(catalog, edge_model, change)
    message = (
        f"route config '{names.APP_ROUTES}' virtual host 'app' has both routes and a matcher tree"
    )
    assert message in [f.message for f in found]


def test_the_pinned_tenant_is_read_from_exact_matchers_only() -> None:
    def route(*headers: rc.HeaderMatcher) -> rc.Route:
        return rc.Route(match=rc.RouteMatch(prefix="/", headers=list(headers)))

    exact = rc.HeaderMatcher(name=TENANT, string_match={"exact": "acme"})
    assert dispatch.pinned_tenant(route(exact)) == "acme"
    inverted = rc.HeaderMatcher(name=TENANT, string_match={"exact": "acme"}, invert_match=True)
    assert dispatch.pinned_tenant(route(inverted)) is None
    prefix = rc.HeaderMatcher(name=TENANT, string_match={"prefix": "ac"})
    assert dispatch.pinned_tenant(route(prefix)) is None
    folded = rc.HeaderMatcher(name=TENANT, string_match={"exact": "acme", "ignore_case": True})
    assert dispatch.pinned_tenant(route(folded)) is None
    assert re.fullmatch(r"x-tiermesh-tenant", TENANT)


def test_status_counts_a_dispatched_table_by_its_routes(
    edge_model: MeshModel, flat: list[rc.Route]
) -> None:
    """``tiermesh status`` reports a node's route count; a table dispatched by tenant has
    no ``routes`` of its own, and is counted as the table it serves."""
    from tiermesh.controlplane.runtime.status import _snapshot_summary  # noqa: PLC0415

    snapshot = compile_snapshot(edge_model, EDGE)
    summary = _snapshot_summary(snapshot)
    assert summary is not None
    configs = [snapshot.resource(typeurls.ROUTE, n) for n in snapshot.names(typeurls.ROUTE)]
    others = sum(
        len(host.routes)
        for config in configs
        if isinstance(config, route_pb2.RouteConfiguration)
        for host in config.virtual_hosts
        if not host.HasField("matcher")
    )
    assert summary["routes"] == len(flat) + others
