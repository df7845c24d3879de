"""Generators on the demo edge plan and on small hand-made plans."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.json_format import MessageToDict

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tests.unit.compiler.plans import TEST_AUTHZ, TEST_BUNDLE, evaluate_compact_plan, evaluate_plan
from tiermesh.controlplane.api import Catalog, Plan, TenantUsage
from tiermesh.controlplane.generators import GENERATORS, compile_snapshot, dispatch, refusal_body
from tiermesh.controlplane.generators.clusters import chain_cluster
from tiermesh.controlplane.generators.listeners import RATE_LIMIT_FILTER
from tiermesh.controlplane.model import MeshModel, NodeSettings, PlanMismatch, UnknownNode
from tiermesh.xds import typeurls


def envoy_routes(model: MeshModel) -> list[Any]:
    """The app route table in the order it is compiled, before dispatch (whose first
    matches are the same: tests/unit/compiler/test_route_dispatch.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "DISPATCH_MIN_ROUTES", 10**9)
        (config,) = GENERATORS[typeurls.ROUTE](model, EDGE)
    return list(config.virtual_hosts[0].routes)


def headers_of(route: Any) -> dict[str, Any]:
    return {h.name: MessageToDict(h) for h in route.match.headers}


def test_one_generator_per_served_type() -> None:
    assert set(GENERATORS) == set(typeurls.PUSH_ORDER)


def test_same_plan_same_version(edge_plan: Plan, catalog: Catalog) -> None:
    again = MeshModel.build([evaluate_plan(catalog)], {EDGE: EDGE_SETTINGS})
    first = compile_snapshot(MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}), EDGE)
    assert compile_snapshot(again, EDGE).version == first.version
    with pytest.raises(PlanMismatch, match="no trust bundle"):
        MeshModel.build([edge_plan], {EDGE: NodeSettings(app_port=10001)})
    other = NodeSettings(app_port=10001, trust_bundle_pem=TEST_BUNDLE, authz=TEST_AUTHZ)
    changed = compile_snapshot(MeshModel.build([edge_plan], {EDGE: other}), EDGE)
    assert changed.version != first.version
    assert changed.type_version(typeurls.CLUSTER) == first.type_version(typeurls.CLUSTER)


def test_routes_follow_plan_order_with_budget_routes(
    edge_model: MeshModel, edge_plan: Plan
) -> None:
    names = [r.name for r in envoy_routes(edge_model)]
    base = [n for n in names if "/" not in n]
    assert base == [r.name for r in edge_plan.routes]
    restricted = "acme.restricted.chat.*"  # chain onprem → edge; budget fallback edge → onprem
    at = names.index(restricted)
    assert names[at - 1 : at + 1] == [f"{restricted}/budget", restricted]
    assert "/" not in names[at + 1]  # the next plan route (or its budget twin) follows
    assert not any("unclassified" in n for n in names)  # one route takes restricted and unlabelled
    assert "acme.restricted.classify.*/budget" not in names  # fallback equals the chain


def test_header_matchers_are_exact_and_skip_wildcards(edge_model: MeshModel) -> None:
    by_name = {r.name: r for r in envoy_routes(edge_model)}
    assert headers_of(by_name["acme.public.classify.*"]) == {
        "x-tiermesh-tenant": {"name": "x-tiermesh-tenant", "stringMatch": {"exact": "acme"}},
        "x-tiermesh-sensitivity": {
            "name": "x-tiermesh-sensitivity",
            "stringMatch": {"exact": "public"},
        },
        "x-tiermesh-task": {"name": "x-tiermesh-task", "stringMatch": {"exact": "classify"}},
    }
    restricted = headers_of(by_name["acme.restricted.*.*"])
    assert restricted["x-tiermesh-sensitivity"] == {
        "name": "x-tiermesh-sensitivity",
        "stringMatch": {"safeRegex": {"regex": "restricted|"}},
        "treatMissingHeaderAsEmpty": True,
    }
    budget = headers_of(by_name["acme.public.*.*/budget"])
    assert budget["x-tiermesh-budget"]["stringMatch"] == {"exact": "exhausted"}


def test_an_empty_chain_answers_503(edge_model: MeshModel) -> None:
    by_name = {r.name: r for r in envoy_routes(edge_model)}
    refused = by_name["globex.restricted.*.smart"]
    assert refused.direct_response.status == 503
    assert refused.direct_response.body.inline_string == refusal_body("globex.restricted.*.smart")
    assert "globex.restricted.*.smart/unclassified" not in by_name


def test_a_chain_route_fails_over_through_an_aggregate(edge_model: MeshModel) -> None:
    by_name = {r.name: r for r in envoy_routes(edge_model)}
    action = MessageToDict(by_name["acme.public.chat.*"].route)
    assert action["cluster"] == "chain|onprem-gpu|frontier-eu|edge-smollm"
    assert action["timeout"] == "210s"
    retry = action["retryPolicy"]
    assert retry["perTryTimeout"] == "3s"
    assert retry["numRetries"] == 2 + 2 + 1 + 2
    assert retry["retryOn"] == "5xx,connect-failure,refused-stream,reset,retriable-status-codes"
    assert retry["retryPriority"]["name"] == "envoy.retry_priorities.previous_priorities"
    assert retry["retryBackOff"] == {"baseInterval": "0.100s", "maxInterval": "4s"}
    assert not by_name["acme.public.chat.*"].typed_per_filter_config


def test_single_step_routes_use_the_backend_cluster(edge_model: MeshModel) -> None:
    by_name = {r.name: r for r in envoy_routes(edge_model)}
    action = by_name["globex.restricted.chat.*"].route
    assert action.cluster == "edge-smollm"
    assert not action.retry_policy.HasField("retry_priority")
    assert not action.retry_policy.HasField("per_try_timeout")


def test_clusters(edge_model: MeshModel) -> None:
    clusters = {c.name: c for c in GENERATORS[typeurls.CLUSTER](edge_model, EDGE)}
    edge = clusters["edge-smollm"]
    assert edge.type == cluster_pb2.Cluster.EDS
    assert edge.eds_cluster_config.service_name == "edge-smollm"
    assert edge.circuit_breakers.thresholds[0].max_requests.value == 1
    assert edge.outlier_detection.consecutive_5xx.value == 3
    assert edge.health_checks[0].http_health_check.path == "/v1/models"
    assert MessageToDict(edge.metadata)["filterMetadata"]["tiermesh"] == {
        "backend": "edge-smollm",
        "tier": "local",
        "residency": "eu",
    }
    gpu = clusters["onprem-gpu"]
    assert gpu.type == cluster_pb2.Cluster.STRICT_DNS
    context = tls_pb2.UpstreamTlsContext()
    gpu.transport_socket.typed_config.Unpack(context)
    assert context.sni == "gpu-1.internal"
    validation = context.common_tls_context.combined_validation_context
    (san,) = validation.default_validation_context.match_typed_subject_alt_names
    assert san.matcher.exact == "spiffe://tiermesh.local/node/gpu-1"
    assert validation.validation_context_sds_secret_config.name == "tiermesh-spiffe-bundle"
    config = aggregate_pb2.ClusterConfig()
    clusters["chain|edge-smollm|onprem-gpu"].cluster_type.typed_config.Unpack(config)
    assert list(config.clusters) == ["edge-smollm", "onprem-gpu"]


def test_listener_and_endpoints(edge_model: MeshModel) -> None:
    (listener,) = GENERATORS[typeurls.LISTENER](edge_model, EDGE)
    address = listener.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 10000)
    names = [a.cluster_name for a in GENERATORS[typeurls.ENDPOINT](edge_model, EDGE)]
    assert names == ["edge-smollm", "frontier-eu", "frontier-us"]  # gpu-1.internal is DNS
    (secret,) = GENERATORS[typeurls.SECRET](edge_model, EDGE)
    assert secret.validation_context.trusted_ca.inline_string == TEST_BUNDLE


def test_rate_limits_are_one_bucket_per_tenant_in_the_listener(edge_model: MeshModel) -> None:
    (listener,) = GENERATORS[typeurls.LISTENER](edge_model, EDGE)
    (chain,) = listener.filter_chains
    manager = hcm_pb2.HttpConnectionManager()
    chain.filters[0].typed_config.Unpack(manager)
    (limiter,) = [f for f in manager.http_filters if f.name == RATE_LIMIT_FILTER]
    config = local_rate_limit_pb2.LocalRateLimit()
    limiter.typed_config.Unpack(config)
    assert not config.local_rate_limit_per_downstream_connection
    assert not config.HasField("token_bucket")  # requests of no limited tenant pass
    assert config.filter_enabled.default_value.numerator == 100
    assert config.filter_enforced.default_value.numerator == 100
    (policy,) = config.rate_limits
    (action,) = policy.actions
    header = action.request_headers
    assert (header.header_name, header.descriptor_key) == ("x-tiermesh-tenant", "tiermesh_tenant")
    buckets = {
        d.entries[0].value: MessageToDict(d.token_bucket)
        for d in config.descriptors
        if [e.key for e in d.entries] == ["tiermesh_tenant"]
    }
    assert len(buckets) == len(config.descriptors)
    # acme sets its own limit; the others take the catalog default.
    assert buckets == {
        "acme": {"maxTokens": 100, "tokensPerFill": 50, "fillInterval": "1s"},
        "globex": {"maxTokens": 40, "tokensPerFill": 20, "fillInterval": "1s"},
        "initech": {"maxTokens": 40, "tokensPerFill": 20, "fillInterval": "1s"},
    }
    assert not any(r.typed_per_filter_config for r in envoy_routes(edge_model))


def test_a_spent_budget_needs_no_budget_routes(catalog: Catalog) -> None:
    plan = evaluate_plan(catalog, usage={"initech": TenantUsage(spent_usd=7.5)})
    model = MeshModel.build([plan], {EDGE: EDGE_SETTINGS})
    names = [r.name for r in envoy_routes(model)]
    assert "initech.public.chat.*" in names
    assert not any(n.startswith("initech.") and n.endswith("/budget") for n in names)


def test_model_errors(edge_plan: Plan) -> None:
    with pytest.raises(PlanMismatch, match="no node settings"):
        MeshModel.build([edge_plan], {})
    with pytest.raises(UnknownNode, match="gpu-1"):
        MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}).node("gpu-1")
    broken = edge_plan.model_copy(update={"backends": edge_plan.backends[1:]})
    with pytest.raises(PlanMismatch, match="unknown backend 'edge-smollm'"):
        MeshModel.build([broken], {EDGE: EDGE_SETTINGS})


def test_a_shared_chain_is_refused_for_its_first_route(catalog: Catalog) -> None:
    """Routes of an expanded compact plan share chain objects, which the model derives
    once: a broken one is still refused, naming the first route that has it."""
    plan = evaluate_compact_plan(catalog)
    shared = [route.chain for route in plan.routes if route.chain]
    assert len({id(chain) for chain in shared}) < len(shared)
    first = next(
        route.name
        for route in plan.routes
        if any(s.backend == "edge-smollm" for s in (*route.chain, *route.budget_fallback))
    )
    broken = plan.model_copy(update={"backends": plan.backends[1:]})
    with pytest.raises(PlanMismatch, match=f"route '{first}' names unknown backend 'edge-smollm'"):
        MeshModel.build([broken], {EDGE: EDGE_SETTINGS})


def test_a_chain_cluster_can_take_what_its_members_can(edge_model: MeshModel) -> None:
    """Envoy counts a route's retries against the aggregate cluster; at its default of 3
    retries in flight a failing first tier under load turned into client errors."""
    node = edge_model.node("edge-1")
    upstreams = {u.name: u for u in node.upstreams}
    for chain in node.chains:
        cluster = chain_cluster(chain, 1000, upstreams)
        (limits,) = cluster.circuit_breakers.thresholds
        capacity = sum(upstreams[m].backend.circuit_breaker.max_requests for m in chain.members)
        assert limits.max_requests.value == capacity
        assert limits.max_retries.value == capacity
