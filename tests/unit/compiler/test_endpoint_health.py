"""EDS health: backends of a node reporting unhealthy are served UNHEALTHY, nothing else moves."""

from __future__ import annotations

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf.json_format import MessageToDict

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.controlplane.generators import compile_snapshot, endpoints
from tiermesh.controlplane.model import MeshModel, backends_hosted_by
from tiermesh.controlplane.reconciler import CompileCache, HealthAwareCompiler, default_compiler
from tiermesh.controlplane.verify import compile_and_verify, verify_snapshot
from tiermesh.xds import typeurls

HOSTED = "edge-smollm"
"""The demo catalog's backend hosted by node edge-1 (an IP endpoint: served by EDS)."""


def assignments(model: MeshModel) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    return {a.cluster_name: a for a in endpoints.generate(model, EDGE)}


def health(assignment: endpoint_pb2.ClusterLoadAssignment) -> list[int]:
    return [lb.health_status for group in assignment.endpoints for lb in group.lb_endpoints]


def test_backends_hosted_by_reads_the_catalogs_node(catalog: Catalog) -> None:
    assert backends_hosted_by(catalog, {"edge-1"}) == {HOSTED}
    assert backends_hosted_by(catalog, {"gpu-1", "edge-1"}) == {HOSTED, "onprem-gpu"}
    assert backends_hosted_by(catalog, {"not-registered"}) == frozenset()
    assert backends_hosted_by(catalog, set()) == frozenset()


def test_only_the_unhealthy_backends_endpoints_are_unhealthy(edge_plan: Plan) -> None:
    healthy = MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS})
    down = MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}, unhealthy_backends={HOSTED})
    before, after = assignments(healthy), assignments(down)
    assert set(before) == set(after)
    assert health(after[HOSTED]) == [health_check_pb2.UNHEALTHY]
    for name in before:
        assert health(before[name]) == [health_check_pb2.UNKNOWN]
        if name != HOSTED:
            assert after[name] == before[name]
    # Apart from its health status the endpoint is the one served before.
    marked = endpoint_pb2.ClusterLoadAssignment()
    marked.CopyFrom(after[HOSTED])
    marked.endpoints[0].lb_endpoints[0].ClearField("health_status")
    assert marked == before[HOSTED]


def test_a_healthy_mesh_serves_no_health_status(edge_plan: Plan) -> None:
    default = compile_snapshot(MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}), EDGE)
    empty = MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}, unhealthy_backends=frozenset())
    assert compile_snapshot(empty, EDGE).version == default.version
    for assignment in assignments(empty).values():
        assert "healthStatus" not in str(MessageToDict(assignment))


def test_health_changes_only_the_endpoints_version(edge_plan: Plan) -> None:
    healthy = compile_snapshot(MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}), EDGE)
    model = MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}, unhealthy_backends={HOSTED})
    down = compile_snapshot(model, EDGE)
    assert down.version != healthy.version
    for type_url in typeurls.PUSH_ORDER:
        changed = down.type_version(type_url) != healthy.type_version(type_url)
        assert changed == (type_url == typeurls.ENDPOINT), type_url
    # A backend the plan does not use changes nothing.
    unused = MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}, unhealthy_backends={"nope"})
    assert compile_snapshot(unused, EDGE).version == healthy.version


def test_the_verifier_passes_unhealthy_endpoints(edge_plan: Plan, catalog: Catalog) -> None:
    everything = frozenset(b.name for b in edge_plan.backends)
    model = MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}, unhealthy_backends=everything)
    snapshot = compile_and_verify(model, EDGE, catalog)
    assert verify_snapshot(snapshot, catalog) == []
    assert {tuple(health(a)) for a in assignments(model).values()} == {
        (health_check_pb2.UNHEALTHY,)
    }


def test_the_compiler_keys_its_cache_on_the_plans_unhealthy_backends(
    edge_plan: Plan, catalog: Catalog
) -> None:
    cache = CompileCache()
    healthy = default_compiler(lambda _node_id: EDGE_SETTINGS, cache=cache)
    assert isinstance(healthy, HealthAwareCompiler)
    first = healthy(edge_plan, catalog)

    down = healthy.with_unhealthy_nodes(frozenset({"edge-1"}))
    unhealthy = down(edge_plan, catalog)
    assert unhealthy.version != first.version
    assert unhealthy.type_version(typeurls.CLUSTER) == first.type_version(typeurls.CLUSTER)

    # Nodes hosting none of the plan's backends, or none at all: the cached snapshot.
    elsewhere = healthy.with_unhealthy_nodes(frozenset({"not-registered"}))
    assert elsewhere(edge_plan, catalog) is first
    assert healthy.with_unhealthy_nodes(frozenset()) is healthy
    assert healthy(edge_plan, catalog) is first
    assert down(edge_plan, catalog) is unhealthy

    # Uncached, equal inputs give equal versions (content hashes): back to the first.
    uncached = default_compiler(lambda _node_id: EDGE_SETTINGS, cache=CompileCache(0))
    again = uncached.with_unhealthy_nodes(frozenset({"edge-1"}))(edge_plan, catalog)
    assert again.version == unhealthy.version
    assert uncached.with_unhealthy_nodes(frozenset())(edge_plan, catalog).version == first.version
