"""Answer metrics from access-log entries: entries captured from a real Envoy 1.40 with
the compiled config (``entries/*.textproto``: a cloud JSON answer, a cloud stream, a 404,
a fallback after the cloud stopped, a restricted request with its backends down), some
edited to stand for shapes that need more of a mesh (cascade, budget route, ejection)."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import text_format

from tiermesh.agents.metrics import NodeMetrics, read_entry
from tiermesh.agents.metrics.edge import MAX_MODELS, MAX_TENANTS, position
from tiermesh.controlplane.api import telemetry

ENTRIES = Path(__file__).parent / "entries"


def entry(name: str) -> accesslog_pb2.HTTPAccessLogEntry:
    parsed = accesslog_pb2.HTTPAccessLogEntry()
    text_format.Parse((ENTRIES / f"{name}.textproto").read_text(), parsed)
    return parsed


def value(metrics: NodeMetrics, sample: str, **labels: str) -> float:
    return sum(
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def samples(
    metrics: NodeMetrics, prefix: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name.startswith(prefix) and not s.name.endswith("_created")
    }


def test_a_cloud_json_answer_reads_as_envoy_logged_it() -> None:
    facts = read_entry(entry("cloud_json"))
    assert (facts.route, facts.status, facts.answered) == ("globex.public.reasoning.*", 200, True)
    assert (facts.operation, facts.tenant, facts.tier, facts.backend) == (
        "chat", "globex", "cloud", "cloud",
    )  # fmt: skip
    assert (facts.first_backend, facts.first_byte_s, facts.attempts) == ("cloud", 0.4, 1)
    assert (facts.input_tokens, facts.output_tokens, facts.request_model) == (120, 30, "m")
    assert not facts.stream
    assert position(facts) == ("first", "none")
    t = facts.timings
    assert (
        0
        < t["time_to_first_upstream_tx_byte"]
        < t["time_to_first_upstream_rx_byte"]
        <= t["time_to_last_upstream_rx_byte"]
    )


def test_a_cloud_answer_is_observed_once_in_each_histogram_with_its_attributes() -> None:
    metrics = NodeMetrics()
    metrics.edge.observe(entry("cloud_json"))
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "cloud",
        "gen_ai_request_model": "m",
        "gen_ai_response_model": "",
        "error_type": "",
        "tier": "cloud",
        "backend": "cloud",
        "tenant": "globex",
        "route": "globex.public.reasoning.*",
    }
    for histogram in (
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_server_request_duration_seconds",
        "gen_ai_server_time_to_first_token_seconds",
        "gen_ai_server_time_per_output_token_seconds",
    ):
        assert value(metrics, f"{histogram}_count", **genai) == 1, histogram
    assert value(metrics, "gen_ai_client_operation_time_to_first_chunk_seconds_count") == 0
    for kind, tokens in (("input", 120), ("output", 30)):
        labels = {**genai, "gen_ai_token_type": kind}
        assert value(metrics, "gen_ai_client_token_usage_count", **labels) == 1
        assert value(metrics, "gen_ai_client_token_usage_sum", **labels) == tokens
    facts = read_entry(entry("cloud_json"))
    t = facts.timings
    assert value(metrics, "gen_ai_client_operation_duration_seconds_sum") == pytest.approx(
        t["time_to_last_downstream_tx_byte"]
    )
    assert value(metrics, "gen_ai_server_request_duration_seconds_sum") == pytest.approx(
        t["time_to_last_upstream_rx_byte"] - t["time_to_first_upstream_tx_byte"]
    )
    assert value(metrics, "tiermesh_overhead_seconds_sum") == pytest.approx(
        t["time_to_first_upstream_tx_byte"]
    )
    assert (
        value(metrics, "tiermesh_answers_total", tier="cloud", position="first", reason="none") == 1
    )
    assert value(metrics, "tiermesh_edge_requests_total", code="200", answered="upstream") == 1


def test_a_stream_is_timed_to_its_first_chunk_and_per_chunk() -> None:
    metrics = NodeMetrics()
    facts = metrics.edge.observe(entry("cloud_stream"))
    assert facts.stream
    t = facts.timings
    assert value(
        metrics, "gen_ai_client_operation_time_to_first_chunk_seconds_sum"
    ) == pytest.approx(t["time_to_first_downstream_tx_byte"])
    per_chunk = (t["time_to_last_downstream_tx_byte"] - t["time_to_first_downstream_tx_byte"]) / 29
    assert value(
        metrics, "gen_ai_client_operation_time_per_output_chunk_seconds_sum"
    ) == pytest.approx(per_chunk)


def test_a_fallback_after_a_refused_connection_is_an_upstream_error() -> None:
    metrics = NodeMetrics()
    facts = metrics.edge.observe(entry("fallback_after_cloud_stopped"))
    assert (facts.backend, facts.first_backend, facts.attempts) == ("gpu", "cloud", 2)
    assert position(facts) == ("fallback", "upstream_error")
    assert value(
        metrics, "tiermesh_answers_total", tier="private", backend="gpu",
        position="fallback", reason="upstream_error",
    ) == 1  # fmt: skip


def test_a_late_first_byte_or_an_ejected_first_step_name_their_reason() -> None:
    late = entry("fallback_after_cloud_stopped")
    late.common_properties.time_to_first_upstream_tx_byte.FromMilliseconds(400)
    assert position(read_entry(late)) == ("fallback", "first_byte_deadline")
    ejected = entry("fallback_after_cloud_stopped")
    ejected.common_properties.upstream_request_attempt_count = 1
    assert position(read_entry(ejected)) == ("fallback", "unavailable")


def test_the_budget_route_and_a_cascade_count_as_their_own_fallbacks() -> None:
    budget = entry("fallback_after_cloud_stopped")
    budget.common_properties.route_name = "acme.public.reasoning.*/budget"
    budget.common_properties.upstream_request_attempt_count = 1
    assert position(read_entry(budget)) == ("fallback", "budget")
    # Re-planned for its spent budget, the tenant's route starts with the fallback chain;
    # ext_authz's mark on the request still names why.
    replanned = entry("cloud_json")
    replanned.request.request_headers["x-tiermesh-budget"] = "exhausted"
    assert position(read_entry(replanned)) == ("fallback", "budget")
    cascade = entry("cloud_json")
    cascade.response.response_headers["x-tiermesh-cascade-steps"] = "2"
    assert position(read_entry(cascade)) == ("fallback", "cascade")
    cascade.response.response_headers["x-tiermesh-cascade-steps"] = "1"
    assert position(read_entry(cascade)) == ("first", "none")


def test_a_cascade_step_counts_as_a_step_not_an_answer() -> None:
    metrics = NodeMetrics()
    step = entry("cloud_json")
    step.common_properties.route_name = "acme.public.cascade.*/cascade/0"
    metrics.edge.observe(step)
    assert value(
        metrics, "tiermesh_cascade_steps_total",
        route="acme.public.cascade.*", step="0", backend="cloud", code="200",
    ) == 1  # fmt: skip
    assert value(metrics, "tiermesh_answers_total") == 0
    assert value(metrics, "gen_ai_client_operation_duration_seconds_count") == 0


def test_restricted_traffic_with_its_backends_down_counts_as_fail_closed() -> None:
    metrics = NodeMetrics()
    facts = metrics.edge.observe(entry("restricted_fail_closed"))
    assert (facts.status, facts.answered, facts.sensitivity) == (503, False, "restricted")
    assert value(
        metrics, "tiermesh_fail_closed_total", route="globex.restricted.reasoning.*",
        cause="unreachable",
    ) == 1  # fmt: skip
    assert value(metrics, "tiermesh_answers_total") == 0
    assert value(metrics, "gen_ai_client_token_usage_count") == 0
    # The client waited: its duration is measured, with the status as error.type.
    assert value(metrics, "gen_ai_client_operation_duration_seconds_count", error_type="503") == 1


def test_a_local_404_is_a_request_but_no_answer() -> None:
    metrics = NodeMetrics()
    facts = metrics.edge.observe(entry("denied_unknown_tenant"))
    assert (facts.status, facts.answered) == (404, False)
    assert value(metrics, "tiermesh_edge_requests_total", code="404", answered="local") == 1
    assert value(metrics, "tiermesh_answers_total") == 0
    assert value(metrics, "tiermesh_fail_closed_total") == 0


def test_model_labels_are_bounded() -> None:
    metrics = NodeMetrics()
    for index in range(MAX_MODELS + 5):
        answer = entry("cloud_json")
        usage = answer.common_properties.metadata.filter_metadata["tiermesh.usage"]
        usage.fields["request_model"].string_value = f"model-{index}"
        usage.fields[telemetry.RESPONSE_MODEL_KEY].string_value = "served"
        metrics.edge.observe(answer)
    seen = {
        s.labels["gen_ai_request_model"]
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "gen_ai_client_operation_duration_seconds_count"
    }
    assert len(seen) == MAX_MODELS + 1
    assert "other" in seen
    assert (
        value(
            metrics,
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_response_model="served",
        )
        == MAX_MODELS + 5
    )


def test_a_partial_entry_does_not_raise() -> None:
    metrics = NodeMetrics()
    facts = metrics.edge.observe(accesslog_pb2.HTTPAccessLogEntry())
    assert (facts.status, facts.answered, facts.operation) == (0, False, None)
    assert value(metrics, "tiermesh_edge_requests_total", code="0") == 1
    assert samples(metrics, "gen_ai_") == {}


def test_a_refused_requests_tenant_is_not_a_label_and_tenants_are_bounded() -> None:
    metrics = NodeMetrics()
    refused = entry("restricted_fail_closed")
    refused.common_properties.response_flags.unauthorized_details.reason = (
        accesslog_pb2.ResponseFlags.Unauthorized.EXTERNAL_SERVICE
    )
    refused.request.request_headers["x-tiermesh-tenant"] = "made-up-by-the-client"
    assert metrics.edge.observe(refused).tenant == ""
    for index in range(MAX_TENANTS + 3):
        claimed = entry("denied_unknown_tenant")
        claimed.request.request_headers["x-tiermesh-tenant"] = f"t{index}"
        metrics.edge.observe(claimed)
    tenants = {
        s.labels["tenant"]
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "gen_ai_client_operation_duration_seconds_count"
    }
    assert len(tenants) == MAX_TENANTS + 2  # "", the kept ones, "other"
    assert {"", "other"} <= tenants
