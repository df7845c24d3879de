"""Envoy's own counters, re-exposed on the agent's ``/metrics`` (never counted twice).

Envoy already counts upstream requests, retries, per-try and route timeouts, outlier
ejections, circuit-breaker overflow and ext_authz results per cluster; the agent's scrape
reads them from Envoy's admin interface (``/stats/prometheus`` with :data:`STATS_FILTER`,
on the admin's 0600 Unix socket or its ``HOST:PORT``) and yields them as they are, parsed
by prometheus-client. Counters keep Envoy's Prometheus names with OpenMetrics' ``_total``
(``envoy_cluster_upstream_rq_retry`` → ``envoy_cluster_upstream_rq_retry_total``);
gauges keep theirs; labels (``envoy_cluster_name``, ``envoy_response_code_class``, …)
are Envoy's. Histograms are not re-exposed. An admin interface that does not answer
within :data:`TIMEOUT_S` adds nothing to that scrape (and ``tiermesh_envoy_stats_up``
reads 0).
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = ["STATS_FILTER", "TIMEOUT_S", "EnvoyStatsCollector", "envoy_families"]

TIMEOUT_S: Final = 1.0
STATS_FILTER: Final = (
    r"^(cluster\..+\.(upstream_rq_total|upstream_rq_[0-9]xx|upstream_rq_retry"
    r"|upstream_rq_retry_success|upstream_rq_retry_overflow|upstream_rq_retry_limit_exceeded"
    r"|upstream_rq_per_try_timeout|upstream_rq_timeout|upstream_rq_pending_overflow"
    r"|upstream_cx_overflow|upstream_cx_connect_fail|membership_healthy|membership_total"
    r"|outlier_detection\.ejections_active|outlier_detection\.ejections_enforced_total"
    r"|outlier_detection\.ejections_enforced_consecutive_5xx"
    r"|circuit_breakers\.default\.rq_open)"
    r"|http\.[^.]+\.ext_authz\.([^.]+\.)?(ok|denied|error|failure_mode_allowed)"
    r"|http\.[^.]+\.(.+\.)?http_local_rate_limit\.rate_limited"
    r"|http\.[^.]+\.downstream_rq_[0-9]xx)$"
)
"""Envoy stat names (before Envoy's Prometheus renaming) that are re-exposed."""


def envoy_families(text: str) -> Iterator[Metric]:
    """The counter and gauge families of Envoy's ``/stats/prometheus`` text."""
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            out: Metric = CounterMetricFamily(family.name, family.documentation or family.name)
        elif family.type == "gauge":
            out = GaugeMetricFamily(family.name, family.documentation or family.name)
        else:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = out.name + ("_total" if family.type == "counter" else "")
            out.add_sample(name, sample.labels, sample.value)
        yield out


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class EnvoyStatsCollector(Collector):
    """A prometheus-client collector over one Envoy admin interface: ``admin`` is the
    admin's Unix socket path or ``(host, port)``. Thread-safe (each scrape opens its own
    connection)."""

    def __init__(self, admin: Path | tuple[str, int]) -> None:
        self._admin = admin

    def _get(self) -> str:
        path = "/stats/prometheus?filter=" + urllib.parse.quote(STATS_FILTER, safe="")
        if isinstance(self._admin, Path):
            connection: http.client.HTTPConnection = _UnixConnection(self._admin, TIMEOUT_S)
        else:
            connection = http.client.HTTPConnection(*self._admin, timeout=TIMEOUT_S)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise OSError(f"Envoy admin answered {response.status}")
            return body.decode("utf-8", errors="replace")
        finally:
            connection.close()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("tiermesh_envoy_stats_up", "Envoy's admin answered this scrape")
        try:
            families = list(envoy_families(self._get()))
        except (OSError, http.client.HTTPException, ValueError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families
