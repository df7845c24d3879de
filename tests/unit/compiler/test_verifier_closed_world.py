"""The verifier is closed-world: every shape the compiler emits is modelled (a node with
every feature verifies clean), and every other listener, filter, cluster, endpoint or
transport shape is a finding that names it, never "no targets"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2, extension_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.network.direct_response.v3 import config_pb2 as direct_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tests.unit.compiler.mutate import Resources, decode, rebuild, route
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.generators.mesh_tls import MESH_LISTENER, MESH_LOCAL_CLUSTER
from tiermesh.controlplane.generators.usage import USAGE_CLUSTER
from tiermesh.controlplane.model import (
    AuthzSettings,
    CascadeSettings,
    MeshModel,
    MeshTlsSettings,
    NodeSettings,
    UsageSettings,
    names,
)
from tiermesh.controlplane.verify import Finding, verify_snapshot
from tiermesh.xds import typeurls

RESTRICTED = "acme.restricted.classify.*"  # chain edge-smollm → onprem-gpu
PUBLIC = "acme.public.*.*"
KEY_SECRET = "frontier-eu-key"
EGRESS = names.egress_listener("frontier-eu")
MESH_ROUTE = f"{MESH_LISTENER}/mesh_in[unnamed]"
FULL_SETTINGS = NodeSettings(
    app_port=10000,
    trust_bundle_pem=EDGE_SETTINGS.trust_bundle_pem,
    authz=AuthzSettings(port=9191),
    usage=UsageSettings(port=9192),
    cascade=CascadeSettings(port=9193),
    mesh=MeshTlsSettings(
        inbound_port=8443,
        model_port=18081,
        trust_domain="tiermesh.local",
        allowed_peers=("spiffe://tiermesh.local/node/gpu-1",),
    ),
    credentials={KEY_SECRET: "sk-test"},
)
"""Every node feature: ext_authz, usage log, cascade handler, mesh mTLS, an API key."""


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


@pytest.fixture(scope="module")
def full_catalog(catalog: Catalog) -> Catalog:
    """The demo catalog with an API key for ``frontier-eu`` (so it gets an egress listener)."""
    document = catalog.model_dump(mode="json", exclude_none=True)
    for backend in document["backends"]:
        if backend["name"] == "frontier-eu":
            backend["credential"] = {"secret": KEY_SECRET}
    return Catalog.model_validate(document)


@pytest.fixture(scope="module")
def full_model(full_catalog: Catalog) -> MeshModel:
    return MeshModel.build([evaluate_plan(full_catalog)], {EDGE: FULL_SETTINGS})


@pytest.fixture
def full(full_model: MeshModel) -> Resources:
    return decode(compile_snapshot(full_model, EDGE))


@pytest.fixture
def plain(edge_model: MeshModel) -> Resources:
    """The demo edge snapshot: no mesh, so onprem-gpu's TLS validates over ADS SDS."""
    return decode(compile_snapshot(edge_model, EDGE))


def after(
    resources: Resources, catalog: Catalog, change: Callable[[Resources], None]
) -> list[Finding]:
    change(resources)
    return verify_snapshot(rebuild(resources), catalog)


def own(found: list[Finding]) -> list[Finding]:
    """Findings of the checks here: a network filter besides the connection manager is
    also a ``no-authz`` finding (no ext_authz runs on it), which is not under test here."""
    return [f for f in found if f.kind != "no-authz"]


def kinds(found: list[Finding]) -> set[tuple[str, str, str]]:
    return {(f.kind, f.route, f.cluster) for f in found}


def messages(found: list[Finding]) -> list[str]:
    return [f.message for f in found]


def listener(r: Resources, name: str) -> Any:
    return r[typeurls.LISTENER][name]


def manager(r: Resources, name: str) -> hcm_pb2.HttpConnectionManager:
    parsed = hcm_pb2.HttpConnectionManager()
    listener(r, name).filter_chains[0].filters[0].typed_config.Unpack(parsed)
    return parsed


def set_manager(r: Resources, name: str, parsed: hcm_pb2.HttpConnectionManager) -> None:
    listener(r, name).filter_chains[0].filters[0].typed_config.Pack(parsed)


def tcp_proxy(cluster: str) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(
        name="envoy.filters.network.tcp_proxy",
        typed_config=_pack(tcp_proxy_pb2.TcpProxy(stat_prefix="tcp", cluster=cluster)),
    )


def socket(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def static_cluster(name: str, *addresses: address_pb2.Address) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    cluster.load_assignment.cluster_name = name
    locality = cluster.load_assignment.endpoints.add()
    for address in addresses:
        locality.lb_endpoints.add().endpoint.address.CopyFrom(address)
    return cluster


def first_endpoint(cluster: cluster_pb2.Cluster) -> Any:
    return cluster.load_assignment.endpoints[0].lb_endpoints[0]


# -- what the compiler emits is modelled ------------------------------------------------


def test_a_node_with_every_feature_verifies_clean(full: Resources, full_catalog: Catalog) -> None:
    assert {MESH_LISTENER, EGRESS, names.APP_LISTENER} <= set(full[typeurls.LISTENER])
    assert {
        names.AUTHZ_CLUSTER,
        USAGE_CLUSTER,
        names.CASCADE_CLUSTER,
        MESH_LOCAL_CLUSTER,
        names.egress_cluster("frontier-eu"),
    } <= set(full[typeurls.CLUSTER])
    assert verify_snapshot(rebuild(full), full_catalog) == []


# -- listeners ---------------------------------------------------------------------------


def test_inline_routes_of_the_inbound_listener_are_checked(
    full: Resources, full_catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        parsed = manager(r, MESH_LISTENER)
        parsed.route_config.virtual_hosts[0].routes[0].route.cluster = "frontier-us"
        set_manager(r, MESH_LISTENER, parsed)

    found = after(full, full_catalog, change)
    assert ("restricted-egress", MESH_ROUTE, "frontier-us") in kinds(found)
    assert (
        f"route '{MESH_ROUTE}' → cluster 'frontier-us' (tier cloud) reachable by restricted "
        "traffic (endpoint 127.0.0.1:9101 is backend 'frontier-us')"
    ) in messages(found)


def test_the_inbound_listener_sending_a_cloud_address_to_the_model_server(
    full: Resources, full_catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        cluster = r[typeurls.CLUSTER][MESH_LOCAL_CLUSTER]
        first_endpoint(cluster).endpoint.address.socket_address.port_value = 9101

    found = after(full, full_catalog, change)
    assert ("restricted-egress", MESH_ROUTE, MESH_LOCAL_CLUSTER) in kinds(found)
    assert (
        f"node-local service cluster '{MESH_LOCAL_CLUSTER}' has endpoint 127.0.0.1:9101, "
        "which is backend 'frontier-us' (tier cloud), not cleared for the restricted data "
        "it sees"
    ) in messages(found)


def test_a_tcp_proxy_is_checked_like_a_restricted_route(
    full: Resources, full_catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        chain = listener(r, names.APP_LISTENER).filter_chains.add()
        chain.filters.append(tcp_proxy("frontier-us"))

    found = own(after(full, full_catalog, change))
    route_name = f"{names.APP_LISTENER}/tcp_proxy"
    assert kinds(found) == {
        ("restricted-egress", route_name, "frontier-us"),
        ("residency", route_name, "frontier-us"),
    }
    assert (
        f"listener '{names.APP_LISTENER}' (TCP proxy) → cluster 'frontier-us' (tier cloud) "
        "reachable by restricted traffic (endpoint 127.0.0.1:9101 is backend 'frontier-us')"
    ) in messages(found)


def test_a_tcp_proxy_to_a_local_backend_is_modelled(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        listener(r, names.APP_LISTENER).filter_chains.add().filters.append(tcp_proxy("edge-smollm"))

    assert own(after(full, full_catalog, change)) == []


def test_the_default_filter_chain_is_checked_too(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        listener(r, names.APP_LISTENER).default_filter_chain.filters.append(
            tcp_proxy("frontier-eu")
        )

    found = own(after(full, full_catalog, change))
    assert kinds(found) == {
        (
            "restricted-egress",
            f"{names.APP_LISTENER}/tcp_proxy",
            names.egress_cluster("frontier-eu"),
        )
    }


def test_an_unknown_network_filter(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        listener(r, names.APP_LISTENER).filter_chains[0].filters.insert(
            0,
            listener_components_pb2.Filter(
                name="envoy.filters.network.direct_response",
                typed_config=_pack(direct_pb2.Config()),
            ),
        )

    found = own(after(full, full_catalog, change))
    assert found == [
        Finding(
            "unverifiable",
            "",
            "",
            f"listener '{names.APP_LISTENER}' has network filter "
            "'envoy.filters.network.direct_response' "
            "(type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config), "
            "which is not modelled",
        )
    ]


def test_a_network_filter_by_discovery(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        chain = listener(r, names.APP_LISTENER).filter_chains[0]
        chain.filters.insert(0, listener_components_pb2.Filter(name="found-later"))
        chain.filters[0].config_discovery.default_config.CopyFrom(
            _pack(rbac_pb2.RBAC(stat_prefix="x"))
        )

    found = own(after(full, full_catalog, change))
    assert messages(found) == [
        f"listener '{names.APP_LISTENER}' configures network filter 'found-later' by discovery"
    ]


def test_a_network_rbac_filter_only_refuses(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        listener(r, names.APP_LISTENER).filter_chains[0].filters.insert(
            0,
            listener_components_pb2.Filter(
                name="envoy.filters.network.rbac",
                typed_config=_pack(rbac_pb2.RBAC(stat_prefix="x")),
            ),
        )

    assert own(after(full, full_catalog, change)) == []


def test_listener_filters(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        listener(r, names.APP_LISTENER).listener_filters.add(
            name="envoy.filters.listener.original_dst"
        )

    found = after(full, full_catalog, change)
    assert messages(found) == [
        f"listener '{names.APP_LISTENER}' has listener filters "
        "('envoy.filters.listener.original_dst')"
    ]


def test_handing_connections_to_the_original_destination(
    full: Resources, full_catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        listener(r, names.APP_LISTENER).use_original_dst.value = True

    found = after(full, full_catalog, change)
    assert messages(found) == [
        f"listener '{names.APP_LISTENER}' hands connections to the listener of their "
        "original destination"
    ]


def test_scoped_routes(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        parsed = manager(r, names.APP_LISTENER)
        parsed.scoped_routes.name = "scopes"
        set_manager(r, names.APP_LISTENER, parsed)

    found = after(full, full_catalog, change)
    assert ("unverifiable", "", "") in kinds(found)
    assert f"listener '{names.APP_LISTENER}' uses scoped routes" in messages(found)


def test_routes_from_another_server(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        parsed = manager(r, names.APP_LISTENER)
        parsed.rds.config_source.CopyFrom(
            config_source_pb2.ConfigSource(path_config_source=config_source_pb2.PathConfigSource())
        )
        set_manager(r, names.APP_LISTENER, parsed)

    found = after(full, full_catalog, change)
    assert messages(found) == [
        f"listener '{names.APP_LISTENER}' takes route config '{names.APP_ROUTES}' from a "
        "source other than ADS"
    ]


def test_an_internal_listener_no_cluster_sends_to(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        ghost = listener_pb2.Listener()
        ghost.CopyFrom(listener(r, EGRESS))
        ghost.name = "egress|ghost"
        r[typeurls.LISTENER][ghost.name] = ghost

    found = after(full, full_catalog, change)
    assert messages(found) == ["internal listener 'egress|ghost' is reached from no cluster"]


def test_an_internal_listener_with_a_tcp_proxy_is_followed(
    full: Resources, full_catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        chain = listener(r, EGRESS).filter_chains[0]
        del chain.filters[:]
        chain.filters.append(tcp_proxy("frontier-us"))

    found = after(full, full_catalog, change)
    assert ("residency", PUBLIC, "frontier-us") in kinds(found)


# -- routes --------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["filter_action", "non_forwarding_action"])
def test_route_actions_that_are_not_modelled(
    plain: Resources, catalog: Catalog, action: str
) -> None:
    def change(r: Resources) -> None:
        getattr(route(r, RESTRICTED), action).SetInParent()

    found = after(plain, catalog, change)
    assert messages(found) == [
        f"route '{RESTRICTED}' has action '{action}', which is not modelled, reachable by "
        "restricted traffic"
    ]


def test_a_weighted_cluster_picked_by_header(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        action = route(r, RESTRICTED).route
        action.weighted_clusters.clusters.add(name="edge-smollm", weight={"value": 90})
        action.weighted_clusters.clusters.add(cluster_header="x-pick", weight={"value": 10})

    found = after(plain, catalog, change)
    assert messages(found) == [
        f"route '{RESTRICTED}' picks a weighted cluster from header 'x-pick', reachable by "
        "restricted traffic"
    ]


def test_virtual_hosts_from_vhds(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        r[typeurls.ROUTE][names.APP_ROUTES].vhds.config_source.ads.SetInParent()

    found = after(plain, catalog, change)
    assert messages(found) == [f"route config '{names.APP_ROUTES}' takes virtual hosts from VHDS"]


def test_a_virtual_host_routed_by_a_matcher_tree(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        host = r[typeurls.ROUTE][names.APP_ROUTES].virtual_hosts[0]
        host.matcher.on_no_match.action.name = "anywhere"

    found = after(plain, catalog, change)
    assert sorted(messages(found)) == [
        f"route config '{names.APP_ROUTES}' virtual host 'app' has both routes and a matcher tree",
        f"route config '{names.APP_ROUTES}' virtual host 'app' matcher tree is neither a list "
        "nor a tree",
    ]


def test_a_route_table_mirror_reaches_every_route(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        r[typeurls.ROUTE][names.APP_ROUTES].request_mirror_policies.add(cluster="edge-smollm")

    found = after(plain, catalog, change)
    assert ("mirror", RESTRICTED, "edge-smollm") in kinds(found)
    assert {f.kind for f in found} == {"mirror"}


def test_a_mirror_picked_by_header(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        route(r, PUBLIC).route.request_mirror_policies.add(cluster_header="x-mirror")

    found = after(plain, catalog, change)
    assert messages(found) == [
        f"route '{PUBLIC}' mirrors to the cluster named by header 'x-mirror'"
    ]


# -- clusters ------------------------------------------------------------------------------


def test_a_cluster_mixing_internal_and_socket_endpoints(
    full: Resources, full_catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        cluster = r[typeurls.CLUSTER]["frontier-eu"]
        cluster.load_assignment.endpoints[0].lb_endpoints.add().endpoint.address.CopyFrom(
            socket("127.0.0.1", 9102)
        )

    found = after(full, full_catalog, change)
    assert {f.kind for f in found} == {"unverifiable"}
    assert any(
        m.endswith("cluster 'frontier-eu' mixes internal listeners and socket addresses")
        for m in messages(found)
    )


def test_a_transport_chosen_per_endpoint(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        cluster = r[typeurls.CLUSTER]["onprem-gpu"]
        cluster.transport_socket_matches.add(
            name="plain"
        ).transport_socket.name = "envoy.transport_sockets.raw_buffer"

    found = after(plain, catalog, change)
    assert ("unverifiable", RESTRICTED, "onprem-gpu") in kinds(found)
    assert (
        f"route '{RESTRICTED}' → cluster 'onprem-gpu' chooses its transport per endpoint "
        "(transport_socket_matches)"
    ) in messages(found)


def test_upstream_filters_on_a_cluster(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        cluster = r[typeurls.CLUSTER]["edge-smollm"]
        options = upstream_http_pb2.HttpProtocolOptions()
        options.http_filters.add(name="envoy.filters.http.lua")
        options.explicit_http_config.http_protocol_options.SetInParent()
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].Pack(options)
        cluster.filters.add(name="envoy.filters.upstream_network.example")

    found = after(plain, catalog, change)
    assert {m.split(" → ")[-1] for m in messages(found)} == {
        "cluster 'edge-smollm' has upstream HTTP filters",
        "cluster 'edge-smollm' has upstream network filters",
    }


@pytest.mark.parametrize(
    ("kind", "modelled"),
    [
        (cluster_pb2.Cluster.LOGICAL_DNS, True),
        (cluster_pb2.Cluster.STRICT_DNS, True),
        (cluster_pb2.Cluster.ORIGINAL_DST, False),
    ],
)
def test_cluster_types(plain: Resources, catalog: Catalog, kind: int, modelled: bool) -> None:
    def change(r: Resources) -> None:
        r[typeurls.CLUSTER]["onprem-gpu"].type = kind

    found = after(plain, catalog, change)
    if modelled:
        assert found == []
    else:
        assert ("unverifiable", RESTRICTED, "onprem-gpu") in kinds(found)
        assert f"route '{RESTRICTED}' → cluster 'onprem-gpu' forwards to any address" in messages(
            found
        )


def test_a_custom_cluster_type(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        cluster = r[typeurls.CLUSTER]["edge-smollm"]
        cluster.cluster_type.CopyFrom(
            cluster_pb2.Cluster.CustomClusterType(name="envoy.clusters.dynamic_forward_proxy")
        )

    found = after(plain, catalog, change)
    assert (
        f"route '{RESTRICTED}' → cluster 'edge-smollm' has unknown type "
        "'envoy.clusters.dynamic_forward_proxy'"
    ) in messages(found)


def test_endpoints_from_another_server(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        config = r[typeurls.CLUSTER]["edge-smollm"].eds_cluster_config
        config.eds_config.CopyFrom(
            config_source_pb2.ConfigSource(path_config_source=config_source_pb2.PathConfigSource())
        )

    found = after(plain, catalog, change)
    assert (
        f"route '{RESTRICTED}' → cluster 'edge-smollm' takes its endpoints from a source "
        "other than ADS"
    ) in messages(found)


@pytest.mark.parametrize(
    ("change_endpoint", "problem"),
    [
        (
            lambda e: e.endpoint.address.CopyFrom(
                address_pb2.Address(pipe=address_pb2.Pipe(path="/run/x.sock"))
            ),
            "has a Unix socket endpoint '/run/x.sock'",
        ),
        (
            lambda e: setattr(e.endpoint, "hostname", "elsewhere.example"),
            "gives an endpoint host name 'elsewhere.example'",
        ),
        (
            lambda e: setattr(e.endpoint.address.socket_address, "resolver_name", "custom"),
            "resolves an endpoint with 'custom'",
        ),
        (
            lambda e: setattr(e.endpoint.address.socket_address, "named_port", "http"),
            "has an endpoint without a port number (127.0.0.1)",
        ),
        (
            lambda e: setattr(
                e.endpoint.address.socket_address, "network_namespace_filepath", "/run/netns/x"
            ),
            "connects to 127.0.0.1 in network namespace '/run/netns/x'",
        ),
        (lambda e: setattr(e, "endpoint_name", "named"), "names endpoint 'named' by name"),
    ],
)
def test_endpoint_shapes_that_are_not_modelled(
    plain: Resources, catalog: Catalog, change_endpoint: Callable[[Any], None], problem: str
) -> None:
    def change(r: Resources) -> None:
        change_endpoint(r[typeurls.ENDPOINT]["edge-smollm"].endpoints[0].lb_endpoints[0])

    found = after(plain, catalog, change)
    assert ("unverifiable", RESTRICTED, "edge-smollm") in kinds(found)
    assert f"route '{RESTRICTED}' → cluster 'edge-smollm' {problem}" in messages(found)


def test_a_cluster_no_route_reaches_still_goes_only_to_catalog_backends(
    plain: Resources, catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        r[typeurls.CLUSTER]["exfil"] = static_cluster("exfil", socket("10.9.9.9", 443))

    found = after(plain, catalog, change)
    assert found == [
        Finding(
            "unknown-endpoint",
            "",
            "exfil",
            "unrouted cluster 'exfil' → cluster 'exfil' has endpoint 10.9.9.9:443, which is no "
            "catalog backend",
        )
    ]


def test_a_cluster_no_route_reaches_is_held_to_the_modelled_shapes(
    plain: Resources, catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        anywhere = static_cluster("anywhere")
        anywhere.type = cluster_pb2.Cluster.ORIGINAL_DST
        r[typeurls.CLUSTER]["anywhere"] = anywhere

    found = after(plain, catalog, change)
    assert messages(found) == [
        "unrouted cluster 'anywhere' → cluster 'anywhere' forwards to any address"
    ]


def test_an_aggregate_no_route_uses_over_reached_clusters(
    plain: Resources, catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        spare = cluster_pb2.Cluster(name="chain|spare")
        spare.cluster_type.name = "envoy.clusters.aggregate"
        spare.cluster_type.typed_config.Pack(
            aggregate_pb2.ClusterConfig(clusters=["edge-smollm", "frontier-eu"])
        )
        r[typeurls.CLUSTER][spare.name] = spare

    assert after(plain, catalog, change) == []


def test_a_cluster_level_mirror_on_an_aggregate(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        cluster = r[typeurls.CLUSTER]["chain|edge-smollm|onprem-gpu"]
        options = upstream_http_pb2.HttpProtocolOptions()
        options.request_mirror_policies.add(cluster="frontier-us")
        options.explicit_http_config.http_protocol_options.SetInParent()
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].Pack(options)

    found = after(plain, catalog, change)
    assert ("mirror", RESTRICTED, "chain|edge-smollm|onprem-gpu") in kinds(found)
    assert ("restricted-egress", RESTRICTED, "frontier-us") in kinds(found)
    assert (
        f"route '{RESTRICTED}' → cluster 'chain|edge-smollm|onprem-gpu' mirrors restricted "
        "traffic to cluster 'frontier-us'"
    ) in messages(found)


def test_a_mirror_in_an_egress_listener_is_followed(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        parsed = manager(r, EGRESS)
        parsed.route_config.virtual_hosts[0].routes[0].route.request_mirror_policies.add(
            cluster="frontier-us"
        )
        set_manager(r, EGRESS, parsed)

    found = after(full, full_catalog, change)
    assert ("residency", PUBLIC, "frontier-us") in kinds(found)
    assert {f.kind for f in found} == {"residency"}


# -- node-local services ---------------------------------------------------------------------


@pytest.mark.parametrize("service", [names.AUTHZ_CLUSTER, USAGE_CLUSTER, names.CASCADE_CLUSTER])
def test_a_node_local_service_off_the_node(
    full: Resources, full_catalog: Catalog, service: str
) -> None:
    def change(r: Resources) -> None:
        first_endpoint(r[typeurls.CLUSTER][service]).endpoint.address.CopyFrom(
            socket("10.0.0.9", 9000)
        )

    found = after(full, full_catalog, change)
    assert (
        Finding(
            "node-service",
            "",
            service,
            f"node-local service cluster '{service}' has endpoint 10.0.0.9:9000, which is not on "
            "the node (no loopback IP address)",
        )
        in found
    )


def test_the_authz_server_at_a_cloud_backends_address(
    full: Resources, full_catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        first_endpoint(r[typeurls.CLUSTER][names.AUTHZ_CLUSTER]).endpoint.address.CopyFrom(
            socket("127.0.0.1", 9101)
        )

    found = after(full, full_catalog, change)
    assert found == [
        Finding(
            "restricted-egress",
            "",
            names.AUTHZ_CLUSTER,
            f"node-local service cluster '{names.AUTHZ_CLUSTER}' has endpoint 127.0.0.1:9101, "
            "which is backend 'frontier-us' (tier cloud), not cleared for the restricted data "
            "it sees",
        )
    ]


def test_a_node_local_service_on_a_unix_socket(full: Resources, full_catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        first_endpoint(r[typeurls.CLUSTER][USAGE_CLUSTER]).endpoint.address.CopyFrom(
            address_pb2.Address(pipe=address_pb2.Pipe(path="/run/tiermesh/usage.sock"))
        )

    assert after(full, full_catalog, change) == []


# -- peer identity -----------------------------------------------------------------------------


def _tls(r: Resources, cluster: str) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext()
    r[typeurls.CLUSTER][cluster].transport_socket.typed_config.Unpack(context)
    return context


def _set_tls(r: Resources, cluster: str, context: tls_pb2.UpstreamTlsContext) -> None:
    r[typeurls.CLUSTER][cluster].transport_socket.typed_config.Pack(context)


def test_a_pin_that_accepts_untrusted_peers(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        context = _tls(r, "onprem-gpu")
        validation = context.common_tls_context.combined_validation_context
        validation.default_validation_context.trust_chain_verification = (
            common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
        )
        _set_tls(r, "onprem-gpu", context)

    found = after(plain, catalog, change)
    assert ("peer-identity", RESTRICTED, "onprem-gpu") in kinds(found)
    assert {f.kind for f in found} == {"peer-identity"}


def test_a_custom_validator_overrules_the_pin(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        context = _tls(r, "onprem-gpu")
        validation = context.common_tls_context.combined_validation_context
        validation.default_validation_context.custom_validator_config.CopyFrom(
            extension_pb2.TypedExtensionConfig(name="envoy.tls.cert_validator.spiffe")
        )
        _set_tls(r, "onprem-gpu", context)

    assert {f.kind for f in after(plain, catalog, change)} == {"peer-identity"}


def test_an_ads_validation_secret_that_widens_the_pin(plain: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        secret = r[typeurls.SECRET][names.TRUST_BUNDLE_SECRET]
        secret.validation_context.match_typed_subject_alt_names.add(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(prefix="spiffe://"),
        )

    found = after(plain, catalog, change)
    assert ("peer-identity", RESTRICTED, "onprem-gpu") in kinds(found)
    assert {f.kind for f in found} == {"peer-identity"}


def test_the_compiled_pin_with_its_ads_secret_holds(plain: Resources, catalog: Catalog) -> None:
    assert names.TRUST_BUNDLE_SECRET in plain[typeurls.SECRET]
    assert after(plain, catalog, lambda r: None) == []


def test_a_cleared_backend_off_loopback_without_a_spiffe_id(
    plain: Resources, catalog: Catalog
) -> None:
    """A catalog built around validation: the verifier does not rely on the catalog rule."""
    unpinned = catalog.model_copy(
        update={
            "backends": tuple(
                b.model_copy(update={"spiffe_id": None}) if b.name == "onprem-gpu" else b
                for b in catalog.backends
            )
        }
    )
    found = verify_snapshot(rebuild(plain), unpinned)
    assert ("peer-identity", RESTRICTED, "onprem-gpu") in kinds(found)
    assert (
        f"route '{RESTRICTED}' → cluster 'onprem-gpu' via 'chain|edge-smollm|onprem-gpu' "
        "reaches backend 'onprem-gpu' (restricted traffic) at gpu-1.internal, which is not "
        "the node's loopback address, and the backend has no spiffe_id to pin the peer to"
    ) in messages(found)
