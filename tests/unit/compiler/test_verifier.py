"""The verifier on the demo edge snapshot: clean as compiled, and each hand-made breach caught."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2

from tests.unit.compiler.conftest import EDGE
from tests.unit.compiler.mutate import Resources, decode, rebuild, route
from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import MeshModel
from tiermesh.controlplane.verify import (
    Finding,
    VerificationError,
    compile_and_verify,
    verify_snapshot,
)
from tiermesh.xds import typeurls

RESTRICTED = "acme.restricted.classify.*"  # chain edge-smollm → onprem-gpu


@pytest.fixture
def resources(edge_model: MeshModel) -> Resources:
    return decode(compile_snapshot(edge_model, EDGE))


def findings_after(
    resources: Resources, catalog: Catalog, change: Callable[[Resources], None]
) -> list[Finding]:
    change(resources)
    return verify_snapshot(rebuild(resources), catalog)


def test_the_compiled_demo_snapshot_passes(edge_model: MeshModel, catalog: Catalog) -> None:
    snapshot = compile_and_verify(edge_model, EDGE, catalog)
    assert snapshot.version == compile_snapshot(edge_model, EDGE).version


def test_a_restricted_route_pointed_at_a_cloud_cluster(
    resources: Resources, catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        route(r, "acme.restricted.*.*").route.cluster = "frontier-us"

    found = findings_after(resources, catalog, change)
    messages = [f.message for f in found]
    assert (
        "route 'acme.restricted.*.*' → cluster 'frontier-us' (tier cloud) reachable by "
        "restricted traffic (endpoint 127.0.0.1:9101 is backend 'frontier-us')"
    ) in messages
    assert {(f.kind, f.route, f.cluster) for f in found} == {
        ("restricted-egress", "acme.restricted.*.*", "frontier-us"),
        ("residency", "acme.restricted.*.*", "frontier-us"),
    }


def test_a_request_without_sensitivity_reaching_the_cloud(
    resources: Resources, catalog: Catalog, edge_model: MeshModel
) -> None:
    """A public route whose sensitivity matcher also takes a missing header (as the
    restricted routes' do) carries restricted traffic: sent to the cloud, it is refused."""
    public = "acme.public.classify.*"

    def change(r: Resources) -> None:
        changed = route(r, public)
        for matcher in changed.match.headers:
            if matcher.name == "x-tiermesh-sensitivity":
                matcher.string_match.safe_regex.regex = "public|"
                matcher.treat_missing_header_as_empty = True
        changed.route.cluster = "frontier-eu"

    found = findings_after(resources, catalog, change)
    assert [(f.kind, f.route, f.cluster) for f in found] == [
        ("restricted-egress", public, "frontier-eu")
    ]

    def to_cloud_only(r: Resources) -> None:
        route(r, public).route.cluster = "frontier-eu"

    fresh = decode(compile_snapshot(edge_model, EDGE))
    assert findings_after(fresh, catalog, to_cloud_only) == []  # labelled public: allowed


def test_a_cloud_endpoint_slipped_into_a_local_cluster(
    resources: Resources, catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        assignment = r[typeurls.ENDPOINT]["edge-smollm"]
        assignment.endpoints[0].lb_endpoints.append(
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(
                            address="127.0.0.1", port_value=9101
                        )
                    )
                )
            )
        )

    found = findings_after(resources, catalog, change)
    kinds = {f.kind for f in found}
    assert kinds == {"restricted-egress", "residency", "mislabelled"}
    assert (
        Finding(
            "restricted-egress",
            RESTRICTED,
            "edge-smollm",
            f"route '{RESTRICTED}' → cluster 'edge-smollm' (tier cloud) via "
            "'chain|edge-smollm|onprem-gpu' reachable by restricted traffic "
            "(endpoint 127.0.0.1:9101 is backend 'frontier-us')",
        )
        in found
    )
    assert any(f.kind == "mislabelled" and f.cluster == "edge-smollm" for f in found)


def test_an_aggregate_with_a_cloud_member(resources: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        cluster = r[typeurls.CLUSTER]["chain|edge-smollm|onprem-gpu"]
        config = aggregate_pb2.ClusterConfig()
        cluster.cluster_type.typed_config.Unpack(config)
        config.clusters.append("frontier-eu")
        cluster.cluster_type.typed_config.Pack(config)

    found = findings_after(resources, catalog, change)
    egress = {(f.route, f.cluster) for f in found if f.kind == "restricted-egress"}
    assert (RESTRICTED, "frontier-eu") in egress
    assert {f.kind for f in found} == {"restricted-egress"}


def test_a_mirror_policy_on_a_restricted_route(resources: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        route(r, RESTRICTED).route.request_mirror_policies.append(
            rc.RouteAction.RequestMirrorPolicy(cluster="edge-smollm")
        )

    found = findings_after(resources, catalog, change)
    assert [(f.kind, f.route, f.cluster) for f in found] == [("mirror", RESTRICTED, "edge-smollm")]
    assert found[0].message == (
        f"route '{RESTRICTED}' mirrors restricted traffic to cluster 'edge-smollm'"
    )


def test_a_missing_cluster(resources: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        route(r, "acme.public.*.*").route.cluster = "nowhere"

    found = findings_after(resources, catalog, change)
    assert [(f.kind, f.route, f.cluster, f.message) for f in found] == [
        (
            "missing",
            "acme.public.*.*",
            "nowhere",
            "route 'acme.public.*.*' → cluster 'nowhere' does not exist",
        )
    ]


def test_a_residency_breach(resources: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        route(r, "acme.public.*.*").route.cluster = "frontier-us"

    found = findings_after(resources, catalog, change)
    assert [(f.kind, f.route, f.cluster) for f in found] == [
        ("residency", "acme.public.*.*", "frontier-us")
    ]
    assert "outside tenant acme's (eu, onprem)" in found[0].message


def test_cluster_header_routing_on_a_restricted_route(
    resources: Resources, catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        route(r, RESTRICTED).route.cluster_header = "x-pick"

    found = findings_after(resources, catalog, change)
    assert [(f.kind, f.route) for f in found] == [("unverifiable", RESTRICTED)]


def test_a_route_without_a_sensitivity_matcher_counts_as_restricted(
    resources: Resources, catalog: Catalog
) -> None:
    def change(r: Resources) -> None:
        public = route(r, "acme.public.*.*")
        kept = [h for h in public.match.headers if h.name != "x-tiermesh-sensitivity"]
        del public.match.headers[:]
        public.match.headers.extend(kept)

    found = findings_after(resources, catalog, change)
    assert {(f.kind, f.route, f.cluster) for f in found} == {
        ("restricted-egress", "acme.public.*.*", "frontier-eu")
    }


def test_weighted_clusters_are_followed(resources: Resources, catalog: Catalog) -> None:
    def change(r: Resources) -> None:
        action = route(r, RESTRICTED).route
        action.weighted_clusters.clusters.add(name="edge-smollm", weight={"value": 90})
        action.weighted_clusters.clusters.add(name="frontier-eu", weight={"value": 10})

    found = findings_after(resources, catalog, change)
    assert [(f.kind, f.route, f.cluster) for f in found] == [
        ("restricted-egress", RESTRICTED, "frontier-eu")
    ]


def test_compile_and_verify_refuses_with_every_finding(
    edge_model: MeshModel, catalog: Catalog
) -> None:
    shrunk = catalog.model_copy(
        update={"backends": tuple(b for b in catalog.backends if b.name != "frontier-us")}
    )
    with pytest.raises(VerificationError) as caught:
        compile_and_verify(edge_model, EDGE, shrunk)
    error = caught.value
    assert error.node_id == EDGE
    assert error.findings
    assert {f.kind for f in error.findings} == {"unknown-endpoint"}
    assert "127.0.0.1:9101, which is no catalog backend" in str(error)


def _sharing(catalog: Catalog, address_of: str, *, host_spelling: str | None = None) -> Catalog:
    """``catalog`` plus a local backend on ``address_of``'s endpoint, built around the
    catalog's own check (which refuses two backends on one endpoint)."""
    owner = next(b for b in catalog.backends if b.name == address_of)
    endpoint = owner.endpoint.model_copy(update={"host": host_spelling or owner.endpoint.host})
    shadow = next(b for b in catalog.backends if b.name == "edge-smollm").model_copy(
        update={"name": "edge-shadow", "endpoint": endpoint}
    )
    return catalog.model_copy(update={"backends": (*catalog.backends, shadow)})


@pytest.mark.parametrize("spelling", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_a_local_backend_on_a_cloud_backends_address_hides_nothing(
    resources: Resources, catalog: Catalog, spelling: str
) -> None:
    shared = _sharing(catalog, "frontier-eu", host_spelling=spelling)

    def change(r: Resources) -> None:
        route(r, RESTRICTED).route.cluster = "frontier-eu"

    found = findings_after(resources, shared, change)
    assert (
        Finding(
            "restricted-egress",
            RESTRICTED,
            "frontier-eu",
            f"route '{RESTRICTED}' → cluster 'frontier-eu' (tier cloud) reachable by restricted "
            "traffic (endpoint 127.0.0.1:9102 is backend 'frontier-eu')",
        )
        in found
    )


def test_a_shared_address_is_judged_by_the_least_cleared_backend_wherever_it_is(
    resources: Resources, catalog: Catalog
) -> None:
    """Unchanged routes: the restricted chain's local member now shares its address with
    a cloud backend, which must not be hidden behind the local one (either order)."""
    cloud = next(b for b in catalog.backends if b.name == "frontier-eu")
    edge = next(b for b in catalog.backends if b.name == "edge-smollm")
    twin = cloud.model_copy(update={"name": "frontier-twin", "endpoint": edge.endpoint})
    for backends in [(*catalog.backends, twin), (twin, *catalog.backends)]:
        shared = catalog.model_copy(update={"backends": backends})
        found = verify_snapshot(rebuild(resources), shared)
        assert ("restricted-egress", RESTRICTED, "edge-smollm") in {
            (f.kind, f.route, f.cluster) for f in found
        }


def test_routes_of_one_shape_each_get_their_finding(resources: Resources, catalog: Catalog) -> None:
    """The checker skips a cluster check only where an equal reach found nothing: two
    routes of one shape (same tenant, sensitivity, cluster) sent to the cloud are both
    named, and a sound route of that shape checked before hides neither."""
    bad = ("acme.restricted.*.*", "acme.restricted.classify.*")

    def change(r: Resources) -> None:
        for name in bad:
            route(r, name).route.cluster = "frontier-us"

    found = findings_after(resources, catalog, change)
    assert {(f.kind, f.route) for f in found if f.kind == "restricted-egress"} == {
        ("restricted-egress", name) for name in bad
    }
