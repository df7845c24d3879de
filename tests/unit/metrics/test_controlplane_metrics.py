"""The control plane's own metrics and its ``--metrics`` server (``/metrics`` alone)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY

from tiermesh.controlplane.metrics import note_issued, note_reconcile
from tiermesh.controlplane.runtime.admin import MetricsServer


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_reconciles_and_issued_svids_are_recorded() -> None:
    ok = sample("tiermesh_reconcile_duration_seconds_count", outcome="ok")
    renewed = sample("tiermesh_svids_issued_total", how="renew")
    note_reconcile(True, 0.25)
    note_issued("edge-9", 1_800_000_000.0, "renew")
    assert sample("tiermesh_reconcile_duration_seconds_count", outcome="ok") == ok + 1
    assert sample("tiermesh_svids_issued_total", how="renew") == renewed + 1
    expiry = sample("tiermesh_node_svid_expiry_timestamp_seconds", node="edge-9")
    assert expiry == 1_800_000_000.0


def test_the_metrics_server_serves_the_registry_and_stops() -> None:
    server = MetricsServer("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            text = response.read().decode()
        assert "# TYPE tiermesh_reconcile_duration_seconds histogram" in text
        assert "# TYPE tiermesh_xds_push_ack_seconds histogram" in text
        assert "trust_domain" not in text  # the status document is the admin server's
    finally:
        server.close()
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(server.url, timeout=1)
