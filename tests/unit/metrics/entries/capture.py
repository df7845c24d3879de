"""Writes the entries of this folder again from a real Envoy with the compiled config.

Run from the repository root after a change to what the access log carries:

    .venv/bin/python tests/unit/metrics/entries/capture.py

It starts the integration test's mesh (tests/integration/metrics), sends one request of
each kind, and writes the access-log entry the agent received for it (text protobuf),
then Envoy's ``/stats/prometheus`` with the agent's filter (``envoy_stats.prom``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from google.protobuf import text_format
from tests.integration.authz.conftest import chat, wait_routes_served
from tests.integration.budgets.backend import UsageBackend
from tests.integration.budgets.conftest import NOBODY, priced_catalog
from tests.integration.budgets.harness import BudgetThread
from tests.integration.compiler.conftest import NODE
from tests.integration.metrics.test_node_metrics_envoy import MetricsMesh, headers
from tests.support.xdsthread import XdsThread
from tests.unit.compiler.plans import evaluate_plan

from tiermesh.agents.metrics import NodeMetrics
from tiermesh.agents.metrics.envoy_stats import EnvoyStatsCollector
from tiermesh.agents.usage import Prices
from tiermesh.controlplane.model import (
    AuthzSettings,
    MeshModel,
    NodeSettings,
    UsageSettings,
)
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, render_bootstrap

OUT = Path(__file__).parent


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="tiermesh-capture-"))
    backends = {name: UsageBackend(name) for name in ("edge", "gpu", "cloud")}
    catalog = priced_catalog({n: b.port for n, b in backends.items()})
    metrics = NodeMetrics()
    captured = []
    observe = metrics.edge.observe

    def keep(entry: object) -> object:
        captured.append(entry)
        return observe(entry)  # type: ignore[arg-type]

    metrics.edge.observe = keep  # type: ignore[method-assign]
    agent = BudgetThread(work, Prices.from_catalog(catalog), metrics)
    xds = XdsThread()
    try:
        listener, admin = free_port(), free_port()
        settings = NodeSettings(
            app_port=listener,
            authz=AuthzSettings(port=agent.authz_port),
            usage=UsageSettings(port=agent.usage_port, flush_interval_ms=20),
        )
        model = MeshModel.build([evaluate_plan(catalog)], {NODE: settings})
        xds.set_snapshot(NODE, compile_and_verify(model, NODE, catalog))
        spec = BootstrapSpec(
            node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=admin
        )
        with EnvoyProcess(render_bootstrap(spec), workdir=work, name=NODE) as envoy:
            envoy.wait_ready(timeout=20)
            wait_routes_served(listener, NOBODY, lambda status: status != 503)
            mesh = MetricsMesh(backends, listener, agent, metrics)
            time.sleep(0.3)
            captured.clear()

            def grab(name: str, sent: dict[str, str], body: bytes) -> None:
                count = len(captured)
                print(name, mesh.send(sent, body).status)
                deadline = time.monotonic() + 5
                while len(captured) == count and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(0.1)
                (OUT / f"{name}.textproto").write_text(text_format.MessageToString(captured[-1]))

            public, restricted = headers("globex", "public"), headers("globex", "restricted")
            grab("cloud_json", public, chat("hello"))
            asked = {"include_usage": True}
            grab("cloud_stream", public, chat("hello", stream=True, stream_options=asked))
            grab("denied_unknown_tenant", NOBODY, chat("hello"))
            backends["cloud"].stop()
            grab("fallback_after_cloud_stopped", public, chat("hello"))
            backends["edge"].stop()
            backends["gpu"].stop()
            grab("restricted_fail_closed", restricted, chat("hello"))
            stats = EnvoyStatsCollector(("127.0.0.1", admin))._get()
            (OUT / "envoy_stats.prom").write_text(stats)
    finally:
        xds.close()
        agent.close()
        for backend in backends.values():
            backend.stop()


if __name__ == "__main__":
    main()
