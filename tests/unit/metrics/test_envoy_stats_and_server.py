"""Envoy's counters re-exposed from its ``/stats/prometheus`` text (a sample of Envoy
1.40's own output), and the node's ``/metrics`` server."""

from __future__ import annotations

import datetime as dt
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tiermesh.agents.metrics import MetricsUnavailable, NodeMetrics
from tiermesh.agents.metrics.envoy_stats import EnvoyStatsCollector, envoy_families

ENVOY_TEXT = """\
# TYPE envoy_cluster_upstream_rq_retry counter
envoy_cluster_upstream_rq_retry{envoy_cluster_name="cloud"} 3
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="cloud"} 7
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="cloud"} 4
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="cloud"} 3
# TYPE envoy_cluster_outlier_detection_ejections_active gauge
envoy_cluster_outlier_detection_ejections_active{envoy_cluster_name="cloud"} 1
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="cloud",le="0.5"} 0
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="cloud",le="+Inf"} 7
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="cloud"} 12
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="cloud"} 7
"""


def test_envoy_counters_keep_their_names_and_labels_with_total() -> None:
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in envoy_families(ENVOY_TEXT)
        for s in family.samples
    }
    cloud = (("envoy_cluster_name", "cloud"),)
    assert found == {
        ("envoy_cluster_upstream_rq_retry_total", cloud): 3,
        ("envoy_cluster_upstream_rq_total", cloud): 7,
        ("envoy_cluster_upstream_rq_xx_total", (*cloud, ("envoy_response_code_class", "2"))): 4,
        ("envoy_cluster_upstream_rq_xx_total", (*cloud, ("envoy_response_code_class", "5"))): 3,
        ("envoy_cluster_outlier_detection_ejections_active", cloud): 1,
    }


def test_an_admin_that_does_not_answer_adds_only_its_up_gauge(tmp_path: Path) -> None:
    collector = EnvoyStatsCollector(tmp_path / "absent.sock")
    families = list(collector.collect())
    assert [(f.name, f.samples[0].value) for f in families] == [("tiermesh_envoy_stats_up", 0)]


def test_metrics_are_served_over_http_and_state_is_read_at_scrape_time() -> None:
    metrics = NodeMetrics()

    class Ledger:
        def budgets(self) -> dict[str, tuple[int, float]]:
            return {"acme": (180_000, 0.1), "globex": (250_000, 100.0)}

    class Spool:
        next_seq = 12
        durable_seq = 9

    metrics.state.ledger = Ledger()
    metrics.state.spool = Spool()
    metrics.state.acknowledged = lambda: 4
    expiry = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    metrics.state.svid_expiry = lambda: expiry
    url = metrics.serve("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        metrics.stop()
    lines = set(text.splitlines())
    assert 'tiermesh_tenant_spent_usd{tenant="acme"} 0.18' in lines
    assert 'tiermesh_tenant_budget_remaining_usd{tenant="acme"} 0.0' in lines
    assert 'tiermesh_tenant_budget_remaining_usd{tenant="globex"} 99.75' in lines
    assert "tiermesh_decisionlog_undurable_records 2.0" in lines
    assert "tiermesh_decisionlog_ship_backlog_records 5.0" in lines
    (svid,) = [x for x in lines if x.startswith("tiermesh_svid_expiry_timestamp_seconds ")]
    assert float(svid.split()[1]) == expiry.timestamp()
    assert "# TYPE gen_ai_client_operation_duration_seconds histogram" in lines
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(url, timeout=1)


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsUnavailable, match=f"127.0.0.1:{port}"):
            NodeMetrics().serve("127.0.0.1", port)
