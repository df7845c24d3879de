"""What the compiler emits for cascade routes, and that the verifier still holds."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2

from tests.integration.compiler.conftest import small_catalog
from tests.integration.flows.conftest import KEY_NAME, NODE, flow_catalog
from tests.unit.compiler.plans import TEST_AUTHZ, evaluate_plan
from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.generators import clusters, compile_snapshot, routes
from tiermesh.controlplane.model import CascadeSettings, MeshModel, NodeSettings, names
from tiermesh.controlplane.verify import compile_and_verify, verify_snapshot
from tiermesh.controlplane.verify.route_tree import host_routes
from tiermesh.xds import Snapshot

HANDLER = 7777


def _model(*, cascade: bool) -> tuple[MeshModel, Catalog]:
    catalog = flow_catalog(8001, 8002, 0.5)
    settings = NodeSettings(
        app_port=9000,
        authz=TEST_AUTHZ,
        credentials={KEY_NAME: "placeholder"},
        cascade=CascadeSettings(port=HANDLER) if cascade else None,
    )
    return MeshModel.build([evaluate_plan(catalog)], {NODE: settings}), catalog


def _routes(model: MeshModel) -> dict[str, object]:
    (config,) = routes.generate(model, NODE)
    assert isinstance(config, route_pb2.RouteConfiguration)
    return {route.name: route for route in host_routes(config.virtual_hosts[0])}


def test_without_cascade_settings_nothing_changes() -> None:
    model, _ = _model(cascade=False)
    assert not [name for name in _routes(model) if "/cascade/" in name]
    assert names.CASCADE_CLUSTER not in {c.name for c in clusters.generate(model, NODE)}


def test_cascade_routes_go_to_the_handler_after_their_step_routes() -> None:
    model, _ = _model(cascade=True)
    table = _routes(model)
    order = list(table)
    route = table["acme.public.triage.*"]
    assert route.route.cluster == names.CASCADE_CLUSTER  # type: ignore[attr-defined]
    added = {h.header.key: h.header.value for h in route.request_headers_to_add}  # type: ignore[attr-defined]
    assert added == {names.CASCADE_CHAIN_HEADER: "2", names.CASCADE_THRESHOLD_HEADER: "0.5"}
    steps = [names.cascade_step_route("acme.public.triage.*", i) for i in (0, 1)]
    assert [table[s].route.cluster for s in steps] == ["edge", "cloud"]  # type: ignore[attr-defined]
    assert order.index(steps[1]) < order.index("acme.public.triage.*")
    (handler,) = [c for c in clusters.generate(model, NODE) if c.name == names.CASCADE_CLUSTER]
    assert handler.type == cluster_pb2.Cluster.STATIC


def test_the_verifier_holds_and_sees_through_the_handler() -> None:
    model, catalog = _model(cascade=True)
    snapshot = compile_and_verify(model, NODE, catalog)
    assert verify_snapshot(snapshot, catalog) == []
    assert isinstance(snapshot, Snapshot)


def _restricted_cascade(handler_port: int) -> tuple[MeshModel, Catalog]:
    """The compiler tests' small catalog (edge local, gpu private cleared, cloud) with a
    restricted-capable cascade task ``triage``."""
    ports = {"edge": 8101, "gpu": 8102, "cloud": 8103}
    data = small_catalog(ports).model_dump(mode="json", exclude_none=True)
    data["tasks"].append(
        {"name": "triage", "complexity": 1, "strategy": "cascade", "min_confidence": 0.9}
    )
    catalog = Catalog.model_validate(data)
    settings = NodeSettings(
        app_port=9000, authz=TEST_AUTHZ, cascade=CascadeSettings(port=handler_port)
    )
    return MeshModel.build([evaluate_plan(catalog)], {NODE: settings}), catalog


def test_a_restricted_cascade_reaches_only_cleared_tiers() -> None:
    model, catalog = _restricted_cascade(HANDLER)
    table = _routes(model)
    route = table["acme.restricted.triage.*"]
    assert route.route.cluster == names.CASCADE_CLUSTER  # type: ignore[attr-defined]
    steps = [n for n in table if n.startswith("acme.restricted.triage.*/cascade/")]
    assert [table[s].route.cluster for s in steps] == ["edge", "gpu"]  # type: ignore[attr-defined]
    compile_and_verify(model, NODE, catalog)


def test_a_handler_on_a_backend_address_is_judged_as_that_backend() -> None:
    model, catalog = _restricted_cascade(8103)  # the cloud backend's port
    kinds = {f.kind for f in verify_snapshot(compile_snapshot(model, NODE), catalog)}
    assert "restricted-egress" in kinds
