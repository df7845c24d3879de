"""The ext_authz invariant: a listener that forwards runs ext_authz first, fail closed, on
the body, and nothing turns it off; a node without ext_authz forwards nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2

from tests.integration.flows.conftest import KEY_NAME, NODE, flow_catalog
from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tests.unit.compiler.mutate import Resources, decode, rebuild, route
from tests.unit.compiler.plans import TEST_AUTHZ, TEST_BUNDLE, evaluate_plan
from tiermesh.controlplane.api import MESH_HOP_CONTEXT, MESH_PROBE_CONTEXT, Catalog, Plan
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.generators.mesh_tls import (
    MESH_LISTENER,
    MESH_NO_AUTHZ_ROUTE,
    MESH_PROBE_ROUTE,
)
from tiermesh.controlplane.generators.routes import NO_AUTHZ_ROUTE, no_authz_body
from tiermesh.controlplane.model import (
    MeshModel,
    MeshTlsSettings,
    NodeSettings,
    UsageSettings,
    names,
)
from tiermesh.controlplane.verify import Finding, compile_and_verify, verify_snapshot
from tiermesh.controlplane.verify.http_filters import EXT_AUTHZ
from tiermesh.xds import typeurls

APP = names.APP_LISTENER
PUBLIC = "acme.public.*.*"
MESH = MeshTlsSettings(
    inbound_port=18100,
    model_port=18001,
    trust_domain="tiermesh.test",
    allowed_peers=("spiffe://tiermesh.test/node/gpu-1",),
)


@pytest.fixture
def resources(edge_plan: Plan, catalog: Catalog) -> Resources:
    settings = NodeSettings(
        app_port=10000, trust_bundle_pem=TEST_BUNDLE, authz=EDGE_SETTINGS.authz, mesh=MESH
    )
    model = MeshModel.build([edge_plan], {EDGE: settings})
    return decode(compile_snapshot(model, EDGE))


def _manager(r: Resources, listener: str = APP) -> hcm_pb2.HttpConnectionManager:
    network_filter = r[typeurls.LISTENER][listener].filter_chains[0].filters[0]
    manager = hcm_pb2.HttpConnectionManager()
    network_filter.typed_config.Unpack(manager)
    return manager


def _set_manager(r: Resources, manager: hcm_pb2.HttpConnectionManager, listener: str = APP) -> None:
    r[typeurls.LISTENER][listener].filter_chains[0].filters[0].typed_config.Pack(manager)


def _change_authz(r: Resources, change: Callable[[ext_authz_pb2.ExtAuthz], None]) -> None:
    manager = _manager(r)
    assert manager.http_filters[0].name == EXT_AUTHZ
    config = ext_authz_pb2.ExtAuthz()
    manager.http_filters[0].typed_config.Unpack(config)
    change(config)
    manager.http_filters[0].typed_config.Pack(config)
    _set_manager(r, manager)


def _findings(r: Resources, catalog: Catalog) -> list[Finding]:
    return verify_snapshot(rebuild(r), catalog)


def _no_authz(r: Resources, catalog: Catalog) -> list[Finding]:
    return [f for f in _findings(r, catalog) if f.kind == "no-authz"]


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _disabled() -> any_pb2.Any:
    return _packed(ext_authz_pb2.ExtAuthzPerRoute(disabled=True))


# -- clean -------------------------------------------------------------------------------


def test_a_compiled_node_with_authz_has_no_finding(resources: Resources, catalog: Catalog) -> None:
    assert MESH_LISTENER in resources[typeurls.LISTENER]
    assert _findings(resources, catalog) == []


def test_a_node_without_authz_forwards_nothing_and_passes(
    edge_plan: Plan, catalog: Catalog
) -> None:
    settings = NodeSettings(app_port=10000, trust_bundle_pem=TEST_BUNDLE, mesh=MESH)
    snapshot = compile_and_verify(MeshModel.build([edge_plan], {EDGE: settings}), EDGE, catalog)
    r = decode(snapshot)
    (table,) = r[typeurls.ROUTE].values()
    assert table.name == names.APP_ROUTES
    routes = [candidate for host in table.virtual_hosts for candidate in host.routes]
    assert [candidate.name for candidate in routes] == [NO_AUTHZ_ROUTE]
    (refusal,) = routes
    assert refusal.direct_response.status == 503
    assert refusal.direct_response.body.inline_string == no_authz_body()
    assert "no request-time policy (ext_authz): fail closed" in no_authz_body()
    assert all(f.name != EXT_AUTHZ for f in _manager(r).http_filters)


# -- the app listener's filter -----------------------------------------------------------


def test_no_ext_authz_is_a_finding(resources: Resources, catalog: Catalog) -> None:
    manager = _manager(resources)
    del manager.http_filters[0]
    _set_manager(resources, manager)
    assert _no_authz(resources, catalog) == [
        Finding(
            "no-authz",
            "",
            "",
            f"listener '{APP}' forwards requests without {EXT_AUTHZ} as its first HTTP filter "
            "(first: 'envoy.filters.http.local_ratelimit')",
        )
    ]


def test_ext_authz_not_first_is_a_finding(resources: Resources, catalog: Catalog) -> None:
    manager = _manager(resources)
    authz, limit = manager.http_filters[0], manager.http_filters[1]
    reordered = [limit, authz, *manager.http_filters[2:]]
    del manager.http_filters[:]
    manager.http_filters.extend(reordered)
    _set_manager(resources, manager)
    (finding,) = _no_authz(resources, catalog)
    assert finding.message.startswith(f"listener '{APP}' forwards requests without {EXT_AUTHZ}")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda c: setattr(c, "failure_mode_allow", True), "failure_mode_allow: true"),
        (lambda c: setattr(c, "clear_route_cache", False), "clear_route_cache: false"),
        (lambda c: c.ClearField("with_request_body"), "no with_request_body"),
        (lambda c: c.ClearField("grpc_service"), "no gRPC service"),
        (lambda c: c.filter_enabled.default_value.SetInParent(), "filter_enabled set"),
    ],
    ids=["failure-mode-allow", "no-clear-route-cache", "no-body", "no-grpc", "filter-enabled"],
)
def test_a_weakened_ext_authz_is_a_finding(
    resources: Resources,
    catalog: Catalog,
    change: Callable[[ext_authz_pb2.ExtAuthz], None],
    says: str,
) -> None:
    _change_authz(resources, change)
    (finding,) = _no_authz(resources, catalog)
    assert finding.message.startswith(f"listener '{APP}' has ext_authz ")
    assert says in finding.message


def test_a_disabled_ext_authz_filter_is_a_finding(resources: Resources, catalog: Catalog) -> None:
    manager = _manager(resources)
    manager.http_filters[0].disabled = True
    _set_manager(resources, manager)
    (finding,) = _no_authz(resources, catalog)
    assert "disabled by default" in finding.message
    assert f"listener '{APP}'" in finding.message


def test_an_upgrade_with_its_own_filters_is_a_finding(
    resources: Resources, catalog: Catalog
) -> None:
    manager = _manager(resources)
    upgrade = manager.upgrade_configs.add(upgrade_type="websocket")
    upgrade.filters.append(manager.http_filters[-1])  # the router alone
    _set_manager(resources, manager)
    (finding,) = _no_authz(resources, catalog)
    assert "(upgrade 'websocket')" in finding.message


def test_a_network_filter_other_than_http_is_a_finding(
    resources: Resources, catalog: Catalog
) -> None:
    chain = resources[typeurls.LISTENER][APP].filter_chains[0]
    chain.filters.append(
        listener_components_pb2.Filter(
            name="envoy.filters.network.tcp_proxy",
            typed_config=_packed(tcp_proxy_pb2.TcpProxy(stat_prefix="x", cluster="frontier-eu")),
        )
    )
    (finding,) = _no_authz(resources, catalog)
    assert finding.message.startswith(f"listener '{APP}' runs network filter")


def test_a_network_filter_that_only_refuses_is_no_finding(
    resources: Resources, catalog: Catalog
) -> None:
    chain = resources[typeurls.LISTENER][APP].filter_chains[0]
    rbac = listener_components_pb2.Filter(
        name="envoy.filters.network.rbac",
        typed_config=_packed(network_rbac_pb2.RBAC(stat_prefix="x")),
    )
    chain.filters.insert(0, rbac)
    assert _no_authz(resources, catalog) == []


# -- per-route, per-virtual-host and per-table configuration -----------------------------


def test_a_route_disabling_ext_authz_is_a_finding(resources: Resources, catalog: Catalog) -> None:
    route(resources, PUBLIC).typed_per_filter_config[EXT_AUTHZ].CopyFrom(_disabled())
    assert _no_authz(resources, catalog) == [
        Finding(
            "no-authz",
            PUBLIC,
            "",
            f"listener '{APP}' → route '{PUBLIC}' disables ext_authz (ExtAuthzPerRoute disabled)",
        )
    ]


def test_a_virtual_host_disabling_ext_authz_is_a_finding(
    resources: Resources, catalog: Catalog
) -> None:
    (table,) = resources[typeurls.ROUTE].values()
    host = table.virtual_hosts[0]
    host.typed_per_filter_config[EXT_AUTHZ].CopyFrom(_disabled())
    (finding,) = _no_authz(resources, catalog)
    assert finding.message == (
        f"listener '{APP}' → virtual host '{host.name}' disables ext_authz "
        "(ExtAuthzPerRoute disabled)"
    )


def test_a_route_config_disabling_ext_authz_is_a_finding(
    resources: Resources, catalog: Catalog
) -> None:
    (table,) = resources[typeurls.ROUTE].values()
    table.typed_per_filter_config[EXT_AUTHZ].CopyFrom(_disabled())
    (finding,) = _no_authz(resources, catalog)
    assert finding.message.startswith(f"listener '{APP}' → route config '{table.name}'")


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (_packed(rc.FilterConfig(disabled=True)), "FilterConfig disabled"),
        (
            _packed(
                ext_authz_pb2.ExtAuthzPerRoute(
                    check_settings=ext_authz_pb2.CheckSettings(disable_request_body_buffering=True)
                )
            ),
            "disable_request_body_buffering",
        ),
        (
            _packed(
                rc.FilterConfig(
                    config=_packed(
                        ext_authz_pb2.ExtAuthzPerRoute(
                            check_settings=ext_authz_pb2.CheckSettings(
                                disable_request_body_buffering=True
                            )
                        )
                    )
                )
            ),
            "disable_request_body_buffering",
        ),
        (_packed(tls_pb2.DownstreamTlsContext()), "unknown type"),
    ],
    ids=["filter-config-disabled", "no-body-buffering", "wrapped-no-body", "unknown"],
)
def test_other_per_route_shapes_that_weaken_ext_authz(
    resources: Resources, catalog: Catalog, config: any_pb2.Any, says: str
) -> None:
    route(resources, PUBLIC).typed_per_filter_config[EXT_AUTHZ].CopyFrom(config)
    (finding,) = _no_authz(resources, catalog)
    assert finding.route == PUBLIC
    assert finding.message.startswith(f"listener '{APP}' → route '{PUBLIC}' ")
    assert says in finding.message


def test_per_route_config_that_keeps_the_check_passes(
    resources: Resources, catalog: Catalog
) -> None:
    settings = ext_authz_pb2.CheckSettings(context_extensions={"route": PUBLIC})
    route(resources, PUBLIC).typed_per_filter_config[EXT_AUTHZ].CopyFrom(
        _packed(ext_authz_pb2.ExtAuthzPerRoute(check_settings=settings))
    )
    assert _no_authz(resources, catalog) == []


def test_disabling_it_on_a_route_that_does_not_forward_passes(
    resources: Resources, catalog: Catalog
) -> None:
    route(resources, names.UNMATCHED_ROUTE).typed_per_filter_config[EXT_AUTHZ].CopyFrom(_disabled())
    assert _no_authz(resources, catalog) == []


# -- exempt listeners --------------------------------------------------------------------


def test_an_egress_listener_is_exempt_only_as_an_internal_listener() -> None:
    catalog = flow_catalog(9001, 9002)
    settings = NodeSettings(app_port=8080, authz=TEST_AUTHZ, credentials={KEY_NAME: "key"})
    r = decode(compile_snapshot(MeshModel.build([evaluate_plan(catalog)], {NODE: settings}), NODE))
    egress = r[typeurls.LISTENER][names.egress_listener("cloud")]
    assert egress.HasField("internal_listener")
    assert _findings(r, catalog) == []
    egress.ClearField("internal_listener")
    (finding,) = _no_authz(r, catalog)
    assert finding.message.startswith(
        f"listener '{names.egress_listener('cloud')}' forwards requests without {EXT_AUTHZ}"
    )


def test_the_compiled_mesh_listener_runs_ext_authz_first_marked_as_a_mesh_hop(
    edge_plan: Plan, catalog: Catalog
) -> None:
    settings = NodeSettings(
        app_port=10000,
        trust_bundle_pem=TEST_BUNDLE,
        authz=EDGE_SETTINGS.authz,
        usage=UsageSettings(port=18002),
        mesh=MESH,
    )
    snapshot = compile_and_verify(MeshModel.build([edge_plan], {EDGE: settings}), EDGE, catalog)
    resources = decode(snapshot)
    assert _manager(resources).access_log  # the app listener charges
    manager = _manager(resources, MESH_LISTENER)
    assert [f.name for f in manager.http_filters] == [EXT_AUTHZ, "envoy.filters.http.router"]
    app_check, mesh_check = ext_authz_pb2.ExtAuthz(), ext_authz_pb2.ExtAuthz()
    _manager(resources).http_filters[0].typed_config.Unpack(app_check)
    manager.http_filters[0].typed_config.Unpack(mesh_check)
    assert mesh_check == app_check  # the same server, body, deadline, fail-closed
    (host,) = manager.route_config.virtual_hosts
    per_route = ext_authz_pb2.ExtAuthzPerRoute()
    host.typed_per_filter_config[EXT_AUTHZ].Unpack(per_route)
    assert dict(per_route.check_settings.context_extensions) == MESH_HOP_CONTEXT
    assert not per_route.disabled
    assert not per_route.check_settings.disable_request_body_buffering
    # Nothing on it charges a tenant: the sending node's app listener did.
    assert not manager.access_log
    (route_,) = host.routes
    assert list(route_.request_headers_to_remove) == [names.CASCADE_TOKEN_HEADER]


def test_the_mesh_listener_is_not_exempt_from_ext_authz(
    resources: Resources, catalog: Catalog
) -> None:
    """Exact peers and a loopback model cluster no longer excuse a missing check."""
    manager = _manager(resources, MESH_LISTENER)
    del manager.http_filters[0]
    _set_manager(resources, manager, MESH_LISTENER)
    (finding,) = _no_authz(resources, catalog)
    assert finding.message.startswith(
        f"listener '{MESH_LISTENER}' forwards requests without {EXT_AUTHZ} as its first"
    )


def test_the_mesh_listener_without_client_certificates_still_passes_on_its_check(
    resources: Resources, catalog: Catalog
) -> None:
    chain = resources[typeurls.LISTENER][MESH_LISTENER].filter_chains[0]
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    context.require_client_certificate.value = False
    chain.transport_socket.typed_config.Pack(context)
    assert _no_authz(resources, catalog) == []


def test_a_mesh_listener_disabling_its_check_is_a_finding(
    resources: Resources, catalog: Catalog
) -> None:
    manager = _manager(resources, MESH_LISTENER)
    manager.route_config.virtual_hosts[0].typed_per_filter_config[EXT_AUTHZ].CopyFrom(_disabled())
    _set_manager(resources, manager, MESH_LISTENER)
    (finding,) = _no_authz(resources, catalog)
    assert finding.message == (
        f"listener '{MESH_LISTENER}' → virtual host 'mesh_in' disables ext_authz "
        "(ExtAuthzPerRoute disabled)"
    )


def test_the_mesh_listener_of_a_node_without_authz_answers_503(
    edge_plan: Plan, catalog: Catalog
) -> None:
    settings = NodeSettings(app_port=10000, trust_bundle_pem=TEST_BUNDLE, mesh=MESH)
    snapshot = compile_and_verify(MeshModel.build([edge_plan], {EDGE: settings}), EDGE, catalog)
    manager = _manager(decode(snapshot), MESH_LISTENER)
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]
    (host,) = manager.route_config.virtual_hosts
    (refusal,) = host.routes
    assert refusal.name == MESH_NO_AUTHZ_ROUTE
    assert refusal.direct_response.status == 503
    assert not refusal.HasField("route")


def _widen_mesh_admission(
    resources: Resources, change: Callable[[tls_pb2.DownstreamTlsContext], None]
) -> None:
    chain = resources[typeurls.LISTENER][MESH_LISTENER].filter_chains[0]
    context = tls_pb2.DownstreamTlsContext()
    chain.transport_socket.typed_config.Unpack(context)
    change(context)
    chain.transport_socket.typed_config.Pack(context)


def _trust_domain_prefix(context: tls_pb2.DownstreamTlsContext) -> None:
    validation = context.common_tls_context.combined_validation_context
    sans = validation.default_validation_context.match_typed_subject_alt_names
    del sans[:]
    sans.add(
        san_type=common_pb2.SubjectAltNameMatcher.URI,
        matcher=string_pb2.StringMatcher(prefix="spiffe://tiermesh.test/node/"),
    )


def _no_sans(context: tls_pb2.DownstreamTlsContext) -> None:
    validation = context.common_tls_context.combined_validation_context
    del validation.default_validation_context.match_typed_subject_alt_names[:]


def _a_dns_san(context: tls_pb2.DownstreamTlsContext) -> None:
    validation = context.common_tls_context.combined_validation_context
    validation.default_validation_context.match_typed_subject_alt_names[
        0
    ].san_type = common_pb2.SubjectAltNameMatcher.DNS


def test_the_compiled_mesh_listener_admits_only_exact_spiffe_ids(
    resources: Resources, catalog: Catalog
) -> None:
    assert _findings(resources, catalog) == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_trust_domain_prefix, "matches URI SANs by prefix, not exactly"),
        (_no_sans, "matches no subject alternative name"),
        (_a_dns_san, "matches a subject alternative name other than a URI"),
    ],
)
def test_a_mesh_listener_admitting_any_svid_of_the_trust_domain_is_a_finding(
    resources: Resources,
    catalog: Catalog,
    change: Callable[[tls_pb2.DownstreamTlsContext], None],
    says: str,
) -> None:
    _widen_mesh_admission(resources, change)
    found = _no_authz(resources, catalog)
    assert found
    assert found[0].message == (
        f"listener '{MESH_LISTENER}' demands a client certificate but {says}: any SVID of "
        "the trust bundle may pass, not only the named peers"
    )


def test_the_mesh_listener_forwarding_to_a_cloud_is_a_restricted_egress_finding(
    resources: Resources, catalog: Catalog
) -> None:
    manager = _manager(resources, MESH_LISTENER)
    manager.route_config.virtual_hosts[0].routes[0].route.cluster = "frontier-eu"
    _set_manager(resources, manager, MESH_LISTENER)
    assert _no_authz(resources, catalog) == []
    kinds = {(f.kind, f.cluster) for f in _findings(resources, catalog)}
    assert ("restricted-egress", "frontier-eu") in kinds


def test_probe_routes_take_only_a_get_of_each_path_marked_as_a_probe(
    edge_plan: Plan, catalog: Catalog
) -> None:
    mesh = replace(MESH, probe_paths=("/v1/models", "/health"))
    settings = replace(EDGE_SETTINGS, mesh=mesh)
    snapshot = compile_and_verify(MeshModel.build([edge_plan], {EDGE: settings}), EDGE, catalog)
    (host,) = _manager(decode(snapshot), MESH_LISTENER).route_config.virtual_hosts
    *probes, rest = host.routes
    assert [p.name for p in probes] == [
        f"{MESH_PROBE_ROUTE}/health",
        f"{MESH_PROBE_ROUTE}/v1/models",
    ]
    for probe, path in zip(probes, ("/health", "/v1/models"), strict=True):
        assert probe.match.path == path
        (method,) = probe.match.headers
        assert (method.name, method.string_match.exact) == (":method", "GET")
        assert probe.route.cluster == rest.route.cluster
        per_route = ext_authz_pb2.ExtAuthzPerRoute()
        probe.typed_per_filter_config[EXT_AUTHZ].Unpack(per_route)
        assert dict(per_route.check_settings.context_extensions) == MESH_PROBE_CONTEXT
    assert rest.match.prefix == "/"
    assert verify_snapshot(snapshot, catalog) == []


@pytest.mark.parametrize("path", ["health", "/health?x=1", "/a#b"])
def test_a_probe_path_must_be_a_bare_absolute_path(path: str) -> None:
    with pytest.raises(ValueError, match="is not an absolute path"):
        replace(MESH, probe_paths=(path,))
