"""The edge node's metrics through a running ``tiermesh up`` (real etcd, control plane,
agents, Envoys, llama.cpp, the HTTPS cloud stand-ins): known traffic moves each counter
and histogram of the edge agent's ``/metrics`` (``metrics_url`` in ``mesh.json``) by
exactly what was sent — a cloud answer, a local fallback after the cloud is stopped, a
restricted request, a PII request, an exhausted budget, a cascade escalation — and every
answer carries ``x-tiermesh-overhead-ms``."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.agent_support import chat, chat_text
from tests.e2e.up_support import Up, cloud_answer, running_up, steer
from tiermesh.demo.mesh import CASCADE_HEADERS, TRIAL_HEADERS

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]

REASONING = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "reasoning",
             "x-tiermesh-sensitivity": "public"}  # fmt: skip
LOCAL_TIERS = {"local", "private"}
EU = "frontier-eu"
Labels = dict[str, str]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-metrics") / "state") as running:
        yield running


class Edge:
    """The edge agent's ``/metrics``, read over HTTP as Prometheus would."""

    def __init__(self, up: Up) -> None:
        self.url = up.mesh["nodes"]["edge-1"]["metrics_url"]

    def read(self) -> list[tuple[str, Labels, float]]:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            text = response.read().decode()
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value
            for sample, found, value in self.read()
            if sample == name and all(found.get(k) == v for k, v in labels.items())
        )

    def settled(self, limit_s: float = 20) -> float:
        """The access-log entries counted, once no more arrived for a second (Envoy
        flushes its access log every 200 ms)."""
        deadline = time.monotonic() + limit_s
        last = self.total("tiermesh_edge_requests_total")
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = self.total("tiermesh_edge_requests_total")
            if now == last:
                return now
            last = now
        raise AssertionError(f"access-log entries still arriving after {limit_s} s")

    def logged(self, before: float, count: int, limit_s: float = 20) -> None:
        """Until ``count`` more access-log entries than ``before`` were counted, and no
        more after that."""
        deadline = time.monotonic() + limit_s
        while self.total("tiermesh_edge_requests_total") < before + count:
            assert time.monotonic() < deadline, f"{count} entries not counted in {limit_s} s"
            time.sleep(0.1)
        assert self.settled() == before + count


class Deltas:
    """Samples read before a step; :meth:`after` gives how far each moved."""

    def __init__(self, edge: Edge, wanted: list[tuple[str, Labels]]) -> None:
        self.edge = edge
        self.wanted = wanted
        self.before = [edge.total(name, **labels) for name, labels in wanted]

    def after(self) -> list[float]:
        return [
            self.edge.total(name, **labels) - before
            for (name, labels), before in zip(self.wanted, self.before, strict=True)
        ]


def test_a_cloud_answer_moves_each_genai_histogram_once(up: Up) -> None:
    cloud_answer(up, REASONING)  # the cloud route is warm
    edge = Edge(up)
    logged = edge.settled()
    cloud = {"tier": "cloud", "tenant": "acme"}
    moved = Deltas(edge, [
        ("tiermesh_answers_total", {**cloud, "position": "first", "reason": "none"}),
        ("gen_ai_client_token_usage_count", {**cloud, "gen_ai_token_type": "input"}),
        ("gen_ai_client_token_usage_count", {**cloud, "gen_ai_token_type": "output"}),
        ("gen_ai_client_operation_duration_seconds_count", cloud),
        ("gen_ai_server_request_duration_seconds_count", cloud),
        ("gen_ai_server_time_to_first_token_seconds_count", cloud),
        ("tiermesh_overhead_seconds_count", {}),
        ("tiermesh_authz_decisions_total", {"outcome": "allow", "status": "200"}),
    ])  # fmt: skip
    status, headers, body = chat(up.port, up.keyed(REASONING), timeout=30)
    assert status == 200, body
    assert headers["x-tiermesh-tier"] == "cloud"
    assert re.fullmatch(r"[0-9]+\.[0-9]{3}", headers["x-tiermesh-overhead-ms"]), headers
    edge.logged(logged, 1)
    assert moved.after() == [1, 1, 1, 1, 1, 1, 1, 1]


def test_a_stopped_cloud_is_counted_as_a_fallback_to_a_local_tier(up: Up) -> None:
    cloud_answer(up, REASONING)
    edge = Edge(up)
    steer(up, EU, up=False)
    try:
        logged = edge.settled()
        moved = Deltas(edge, [
            ("tiermesh_answers_total", {"tenant": "acme", "position": "fallback"}),
            ("tiermesh_answers_total", {"tenant": "acme", "tier": "cloud"}),
            ("tiermesh_answers_total", {"tenant": "acme"}),
        ])  # fmt: skip
        status, headers, body = chat(up.port, up.keyed(REASONING), timeout=30)
        assert status == 200, body
        assert headers["x-tiermesh-tier"] in LOCAL_TIERS
        edge.logged(logged, 1)
        assert moved.after() == [1, 0, 1]
    finally:
        steer(up, EU, up=True)


def test_restricted_and_pii_requests_count_their_sensitivity_and_findings(up: Up) -> None:
    edge = Edge(up)
    logged = edge.settled()
    moved = Deltas(edge, [
        ("tiermesh_sensitivity_decisions_total",
         {"declared": "restricted", "floor": "restricted", "effective": "restricted"}),
        ("tiermesh_sensitivity_decisions_total",
         {"declared": "public", "floor": "restricted", "effective": "restricted"}),
        ("tiermesh_pii_findings_total", {"kind": "email", "where": "body"}),
        ("tiermesh_sensitivity_reasons_total", {"reason": "pii_body"}),
        ("tiermesh_answers_total", {"tier": "cloud"}),
    ])  # fmt: skip
    restricted = {**REASONING, "x-tiermesh-sensitivity": "restricted"}
    status, headers, body = chat(up.port, up.keyed(restricted), timeout=30)
    assert status == 200, body
    assert headers["x-tiermesh-tier"] in LOCAL_TIERS
    status, headers, body = chat_text(
        up.port, up.keyed(REASONING), "mail jane.doe@example.com the plan"
    )
    assert status == 200, body
    assert headers["x-tiermesh-tier"] in LOCAL_TIERS
    edge.logged(logged, 2)
    assert moved.after() == [1, 1, 1, 1, 0]


def test_an_exhausted_budget_is_counted_as_a_budget_fallback(up: Up) -> None:
    edge = Edge(up)
    deadline = time.monotonic() + 60
    tier = "cloud"
    while tier != "local":
        assert time.monotonic() < deadline, "initech's budget was never spent"
        status, headers, body = chat(up.port, up.keyed(TRIAL_HEADERS), timeout=30)
        assert status == 200, body
        tier = headers["x-tiermesh-tier"]
        time.sleep(0.3)
    assert edge.total("tiermesh_tenant_budget_remaining_usd", tenant="initech") == 0
    assert edge.total("tiermesh_tenant_spent_usd", tenant="initech") >= edge.total(
        "tiermesh_tenant_budget_usd", tenant="initech"
    )
    logged = edge.settled()
    moved = Deltas(edge, [
        ("tiermesh_answers_total", {"tenant": "initech", "position": "fallback",
                                    "reason": "budget"}),
        ("tiermesh_answers_total", {"tenant": "initech"}),
    ])  # fmt: skip
    status, headers, body = chat(up.port, up.keyed(TRIAL_HEADERS), timeout=30)
    assert status == 200, body
    assert headers["x-tiermesh-tier"] == "local"
    edge.logged(logged, 1)
    assert moved.after() == [1, 1]


def test_a_cascade_escalation_is_one_answer_and_its_steps(up: Up) -> None:
    edge = Edge(up)
    logged = edge.settled()
    moved = Deltas(edge, [
        ("tiermesh_answers_total", {"position": "fallback", "reason": "cascade"}),
        ("tiermesh_answers_total", {}),
        ("tiermesh_cascade_steps_total", {}),
        ("gen_ai_client_operation_duration_seconds_count", {"tenant": "acme"}),
    ])  # fmt: skip
    status, headers, body = chat(
        up.port, up.keyed(CASCADE_HEADERS), timeout=60, extra={"temperature": 0, "max_tokens": 16}
    )
    assert status == 200, body
    asked = int(headers["x-tiermesh-cascade-steps"])
    assert asked >= 2, headers
    edge.logged(logged, 1 + asked)  # the client's request and each step's
    assert moved.after() == [1, 1, asked, 1]


def scrape(url: str) -> list[tuple[str, Labels, float]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def test_up_prints_where_to_scrape(up: Up) -> None:
    printed = "".join(up.lines).replace("\n", "")
    edge_url = up.mesh["nodes"]["edge-1"]["metrics_url"]
    assert f"curl -s {edge_url}" in printed
    assert f"curl -s {up.mesh['control_plane']['admin_url']}/metrics" in printed
    assert any(name.startswith("gen_ai_") for name, _, _ in scrape(edge_url))


def test_the_node_state_and_the_control_plane_are_measured(up: Up) -> None:
    now = time.time()
    edge = {name: value for name, labels, value in Edge(up).read() if not labels}
    assert edge["tiermesh_envoy_stats_up"] == 1
    assert now < edge["tiermesh_svid_expiry_timestamp_seconds"] < now + 7 * 86400
    assert edge["tiermesh_decisionlog_undurable_records"] >= 0
    assert "tiermesh_decisionlog_ship_backlog_records" in edge
    plane = scrape(up.mesh["control_plane"]["admin_url"] + "/metrics")
    nodes = {labels["node"]: value for name, labels, value in plane
             if name == "tiermesh_node_svid_expiry_timestamp_seconds"}  # fmt: skip
    assert set(nodes) == set(up.mesh["nodes"]), nodes
    assert all(now < expiry for expiry in nodes.values())
    totals: dict[str, float] = {}
    for name, _, value in plane:
        totals[name] = totals.get(name, 0.0) + value
    assert totals["tiermesh_xds_connected_nodes"] == len(up.mesh["nodes"])
    assert totals["tiermesh_xds_push_ack_seconds_count"] > 0
    assert totals["tiermesh_reconcile_duration_seconds_count"] > 0
