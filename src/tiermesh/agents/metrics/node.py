"""One node's metrics: a registry, its observers, and the ``/metrics`` HTTP server.

:class:`NodeMetrics` owns one prometheus-client ``CollectorRegistry`` (not the process
default, so several agents in one process, as in tests, keep theirs apart) holding:

- the answer metrics (:class:`~.edge.EdgeMetrics`, fed by the usage server's access-log
  entries) and the decision metrics (:class:`~.authz.AuthzMetrics`, fed by the ext_authz
  server);
- state read at scrape time (:class:`StateCollector`): each catalog tenant's spend,
  budget and remaining budget this month (the usage ledger, as the budget file says it),
  the decision log's durability lag (records appended but not yet fsync'ed) and ship
  backlog (durable records the control plane has not acknowledged), and the node SVID's
  expiry;
- Envoy's own counters (:class:`~.envoy_stats.EnvoyStatsCollector`), once Envoy runs.

:meth:`NodeMetrics.serve` starts prometheus-client's HTTP server (``/metrics``, its own
thread) on ``HOST:PORT`` (port 0: a free one).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tiermesh.agents.metrics.authz import AuthzMetrics
from tiermesh.agents.metrics.edge import EdgeMetrics
from tiermesh.agents.metrics.envoy_stats import EnvoyStatsCollector
from tiermesh.agents.metrics.errors import MetricsUnavailable

__all__ = ["STATE_METRICS", "BudgetView", "NodeMetrics", "SpoolView", "StateCollector"]

STATE_METRICS: Final = (
    "tiermesh_tenant_spent_usd",
    "tiermesh_tenant_budget_usd",
    "tiermesh_tenant_budget_remaining_usd",
    "tiermesh_decisionlog_undurable_records",
    "tiermesh_decisionlog_ship_backlog_records",
    "tiermesh_svid_expiry_timestamp_seconds",
)
"""Gauges read at scrape time."""


class BudgetView(Protocol):
    """What the state collector reads of the usage ledger."""

    def budgets(self) -> dict[str, tuple[int, float]]: ...


class SpoolView(Protocol):
    """What the state collector reads of the decision log."""

    @property
    def next_seq(self) -> int: ...

    @property
    def durable_seq(self) -> int: ...


class StateCollector(Collector):
    """Gauges read at scrape time from the parts :meth:`NodeMetrics.watch` was given."""

    def __init__(self) -> None:
        self.ledger: BudgetView | None = None
        self.spool: SpoolView | None = None
        self.acknowledged: Callable[[], int | None] | None = None
        self.svid_expiry: Callable[[], dt.datetime | None] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.ledger is not None:
            budgets = self.ledger.budgets()
            spent = GaugeMetricFamily(
                "tiermesh_tenant_spent_usd", "Spend this month", labels=["tenant"]
            )
            budget = GaugeMetricFamily(
                "tiermesh_tenant_budget_usd", "Monthly budget", labels=["tenant"]
            )
            left = GaugeMetricFamily(
                "tiermesh_tenant_budget_remaining_usd", "Budget left this month", labels=["tenant"]
            )
            for tenant, (micro, limit) in sorted(budgets.items()):
                spent.add_metric([tenant], micro / 1_000_000)
                budget.add_metric([tenant], limit)
                left.add_metric([tenant], max(0.0, limit - micro / 1_000_000))
            yield from (spent, budget, left)
        if self.spool is not None:
            durable = self.spool.durable_seq
            lag = GaugeMetricFamily(
                "tiermesh_decisionlog_undurable_records", "Decisions appended, not yet fsync'ed"
            )
            lag.add_metric([], max(0, self.spool.next_seq - 1 - durable))
            yield lag
            acked = self.acknowledged() if self.acknowledged is not None else None
            if acked is not None:
                backlog = GaugeMetricFamily(
                    "tiermesh_decisionlog_ship_backlog_records",
                    "Durable decisions the control plane has not acknowledged",
                )
                backlog.add_metric([], max(0, durable - acked))
                yield backlog
        expiry = self.svid_expiry() if self.svid_expiry is not None else None
        if expiry is not None:
            gauge = GaugeMetricFamily(
                "tiermesh_svid_expiry_timestamp_seconds", "The node SVID's notAfter"
            )
            gauge.add_metric([], expiry.timestamp())
            yield gauge


class NodeMetrics:
    """A node's metrics (module doc). Observers may be called from any thread;
    :meth:`serve` / :meth:`stop` from one."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.edge = EdgeMetrics(self.registry)
        self.authz = AuthzMetrics(self.registry)
        self.state = StateCollector()
        self.registry.register(self.state)
        self._envoy: EnvoyStatsCollector | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def watch_envoy(self, admin: Path | tuple[str, int]) -> None:
        """Re-expose the counters of the Envoy whose admin is at ``admin``."""
        if self._envoy is not None:
            self.registry.unregister(self._envoy)
        self._envoy = EnvoyStatsCollector(admin)
        self.registry.register(self._envoy)

    def exposition(self) -> bytes:
        """The text exposition of everything registered (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> str:
        """Serve ``/metrics`` on ``host:port``; returns its URL.

        Raises:
            MetricsUnavailable: the address cannot be bound.
        """
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsUnavailable(f"{host}:{port}", exc.strerror or str(exc)) from exc
        self._server, self._thread = server, thread
        bound = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}/metrics"
        return self.url

    def stop(self) -> None:
        """Stop the HTTP server (idempotent)."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
