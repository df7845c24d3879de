"""Tenant dispatch of a large app route table (generators/dispatch.py) and how the
verifier reads it (verify/route_tree.py): same first match, every route verified, and
any other matcher tree a finding."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from xds.type.matcher.v3 import matcher_pb2

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tiermesh.controlplane.api import MATCH_HEADERS, Catalog, Plan
from tiermesh.controlplane.generators import compile_snapshot, dispatch, routes
from tiermesh.controlplane.model import MeshModel, names
from tiermesh.controlplane.verify import Finding, verify_snapshot
from tiermesh.controlplane.verify.matching import may_match
from tiermesh.controlplane.verify.route_tree import host_routes
from tiermesh.xds import Snapshot, typeurls

TENANT = MATCH_HEADERS["tenant"]
RESTRICTED = "acme.restricted.*.*"


def _host(plan: Plan) -> rc.VirtualHost:
    (config,) = routes.generate(MeshModel.build([plan], {EDGE: EDGE_SETTINGS}), EDGE)
    (host,) = config.virtual_hosts
    return host


def _lists(host: rc.VirtualHost) -> dict[str, list[rc.Route]]:
    tree = host.matcher
    found: dict[str, list[rc.Route]] = {}
    entries = [*tree.matcher_tree.exact_match_map.map.items(), ("", tree.on_no_match)]
    for key, on_match in entries:
        route_list = rc.RouteList()
        assert on_match.action.typed_config.Unpack(route_list)
        found[key] = list(route_list.routes)
    return found


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
    lists = _lists(host)
    assert sorted(lists) == ["", "acme", "globex", "initech"]
    for tenant, listed in lists.items():
        wanted = (None, tenant) if tenant else (None,)
        assert listed == [r for r in flat if dispatch.pinned_tenant(r) in wanted], tenant
        assert listed[-1].name == names.UNMATCHED_ROUTE
    assert [r.name for r in lists[""]][:1] == ["tiermesh/api-path"]
    assert len(lists["globex"]) < len(flat) / 2
    # The verifier's merge gives back the table: the demo's tenants are in name order.
    assert host_routes(host) == flat


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
    lists = _lists(_host(edge_plan))
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
        tenant = request[TENANT]
        listed = lists[tenant] if tenant in lists else lists[""]
        assert _first(listed, request) == _first(flat, request), request
        checked += 1
    assert checked == 5 * 5 * 4 * 3 * 2 * 2 * 3


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


def _prefix_map(tree: matcher_pb2.Matcher) -> None:
    entries = dict(tree.matcher_tree.exact_match_map.map)
    tree.matcher_tree.prefix_match_map.map["a"].CopyFrom(entries["acme"])


def _query_input(tree: matcher_pb2.Matcher) -> None:
    query = http_inputs_pb2.HttpRequestQueryParamMatchInput(query_param="tenant")
    tree.matcher_tree.input.typed_config.Pack(query)


def _route_action(tree: matcher_pb2.Matcher) -> None:
    tree.on_no_match.action.typed_config.Pack(rc.Route(name="anything"))


def _nested(tree: matcher_pb2.Matcher) -> None:
    inner = matcher_pb2.Matcher()
    inner.CopyFrom(tree)
    tree.matcher_tree.exact_match_map.map["acme"].ClearField("action")
    tree.matcher_tree.exact_match_map.map["acme"].matcher.CopyFrom(inner)


def _keep_matching(tree: matcher_pb2.Matcher) -> None:
    tree.matcher_tree.exact_match_map.map["globex"].keep_matching = True


def _no_fallback(tree: matcher_pb2.Matcher) -> None:
    tree.ClearField("on_no_match")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_prefix_map, "routes by a matcher tree with prefix_match_map"),
        (
            _query_input,
            "routes by a matcher tree on input envoy.type.matcher.v3."
            "HttpRequestQueryParamMatchInput",
        ),
        (
            _route_action,
            "matcher tree on_no_match has an action of type envoy.config.route.v3.Route",
        ),
        (_nested, "matcher tree entry 'acme' holds a nested matcher"),
        (_keep_matching, "matcher tree entry 'globex' keeps matching"),
        (_no_fallback, "has a matcher tree without on_no_match"),
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
