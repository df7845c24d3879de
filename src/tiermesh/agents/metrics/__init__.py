"""The node's metrics: OpenTelemetry GenAI histograms and tiermesh's own figures for
every answer the node's Envoy serves (from its access log), request-time decisions (from
ext_authz), budgets, the decision log and the SVID (read at scrape time), and Envoy's own
counters, served as Prometheus text on the agent's ``metrics_listen``."""

from __future__ import annotations

from tiermesh.agents.metrics.authz import AUTHZ_METRICS, AuthzMetrics
from tiermesh.agents.metrics.edge import EDGE_METRICS, EdgeMetrics, EntryFacts, read_entry
from tiermesh.agents.metrics.envoy_stats import STATS_FILTER, EnvoyStatsCollector
from tiermesh.agents.metrics.errors import MetricsError, MetricsUnavailable
from tiermesh.agents.metrics.node import STATE_METRICS, NodeMetrics, StateCollector

__all__ = [
    "AUTHZ_METRICS",
    "EDGE_METRICS",
    "STATE_METRICS",
    "STATS_FILTER",
    "AuthzMetrics",
    "EdgeMetrics",
    "EntryFacts",
    "EnvoyStatsCollector",
    "MetricsError",
    "MetricsUnavailable",
    "NodeMetrics",
    "StateCollector",
    "read_entry",
]
