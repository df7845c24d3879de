"""What the node's metrics cost on the edge request path, metrics on vs off in one run.

Three Envoys with the same compiled plan in front of the same OpenAI-like backends (the
set-up of ``bench/edge_path.py``, whose helpers this reuses):

1. **route**: the app listener only (the baseline of the edge-path figures);
2. **off**: the shipped edge path (ext_authz + usage accounting) with every telemetry
   addition taken out of the compiled config (``bench/_no_telemetry.py``: route metadata,
   the ``x-tiermesh-overhead-*`` header, the Lua filter's model matches, the access log's
   extra tags and headers) and an agent without metrics;
3. **on**: the shipped edge path as compiled, and an agent with :class:`NodeMetrics`: its
   ext_authz server observes every verdict (before answering Envoy), its usage server
   observes every access-log entry (on the same event loop as the checks), its
   ``/metrics`` re-exposes Envoy's counters (read from Envoy's admin) and is scraped once
   a second by a client thread in this process (Prometheus' default is every 15 s).

Every iteration sends a JSON and a streamed chat completion through all three Envoys, one
request at a time over keep-alive connections, in an order that rotates per iteration.
*Added* latency is a percentile of a scenario minus the same percentile of **route**; the
metrics' cost is **on** minus **off** per round, and the headline is its median over
``--rounds``. Afterwards the **on** agent's ``tiermesh_answers_total`` must equal the
requests sent through it (checked), and only **on** answers carry
``x-tiermesh-overhead-ms``.

Bounded by ``--count`` iterations and ``--seconds`` per round. Writes
``bench/results/metrics_cost.md``.

    .venv/bin/python bench/metrics_cost.py [--count 2000] [--seconds 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.budgets import openai_backend  # noqa: E402
from tests.integration.budgets.harness import BudgetThread  # noqa: E402
from tests.integration.budgets.openai_backend import OpenAIBackend  # noqa: E402
from tests.integration.compiler.conftest import NODE, small_catalog  # noqa: E402
from tests.support.xdsthread import XdsThread  # noqa: E402
from tests.unit.compiler.plans import evaluate_plan  # noqa: E402

from _no_telemetry import compile_without_telemetry  # noqa: E402
from _route_only import compile_route_only  # noqa: E402
from edge_path import BODIES, KINDS, TENANT, fetch  # noqa: E402
from ext_authz import HEADERS, nodelay_backends, summary, warm_connection  # noqa: E402
from tiermesh.agents.metrics import NodeMetrics  # noqa: E402
from tiermesh.agents.usage import Prices  # noqa: E402
from tiermesh.controlplane.api import telemetry  # noqa: E402
from tiermesh.controlplane.generators import compile_snapshot  # noqa: E402
from tiermesh.controlplane.model import (  # noqa: E402
    AuthzSettings,
    MeshModel,
    NodeSettings,
    UsageSettings,
)
from tiermesh.procs.envoy import EnvoyProcess  # noqa: E402
from tiermesh.procs.ports import free_port  # noqa: E402
from tiermesh.xds import BootstrapSpec, render_bootstrap  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "metrics_cost.md"
SCENARIOS = ("route", "off", "on")
SCRAPE_EVERY_S = 1.0


def start(
    workdir: Path, scenario: str, plan: Any, agent: BudgetThread | None
) -> tuple[XdsThread, EnvoyProcess, int, int]:
    """An xDS server and a ready Envoy for ``scenario``; (xds, envoy, app port, admin)."""
    xds = XdsThread()
    listener, admin = free_port(), free_port()
    authz = usage = None
    if agent is not None:
        authz = AuthzSettings(port=agent.authz_port)
        usage = UsageSettings(port=agent.usage_port)
    model = MeshModel.build(
        [plan], {NODE: NodeSettings(app_port=listener, authz=authz, usage=usage)}
    )
    if scenario == "route":
        snapshot = compile_route_only(model, NODE)
    elif scenario == "off":
        snapshot = compile_without_telemetry(model, NODE)
    else:
        snapshot = compile_snapshot(model, NODE)
    xds.set_snapshot(NODE, snapshot)
    spec = BootstrapSpec(node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=admin)
    (workdir / scenario).mkdir()
    envoy = EnvoyProcess(render_bootstrap(spec), workdir=workdir / scenario, name=scenario)
    envoy.start()
    envoy.wait_ready(timeout=20)
    return xds, envoy, listener, admin


def agent_state(
    workdir: Path, name: str, prices: Prices, metrics: NodeMetrics | None
) -> BudgetThread:
    state = workdir / name
    state.mkdir()
    budget = {TENANT: {"spent_usd": 0.0, "limit_usd": prices.budgets[TENANT]}}
    (state / "budget.json").write_text(json.dumps(budget), encoding="utf-8")
    return BudgetThread(state, prices, metrics)


class Scraper:
    """GETs ``url`` every :data:`SCRAPE_EVERY_S` until :meth:`stop`; counts scrapes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scrapes = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_EVERY_S):
            with urllib.request.urlopen(self.url, timeout=5) as response:
                self.bytes = len(response.read())
            self.scrapes += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def overhead_header(port: int, body: bytes) -> str | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/v1/chat/completions", body=body, headers=HEADERS)
        response = connection.getresponse()
        response.read()
        return response.getheader(telemetry.OVERHEAD_HEADER)
    finally:
        connection.close()


def one_round(
    connections: dict[str, http.client.HTTPConnection], count: int, seconds: float
) -> dict[str, dict[str, Any]]:
    samples: dict[tuple[str, str], list[float]] = {(s, k): [] for s in SCENARIOS for k in KINDS}
    order = [(s, k) for k in KINDS for s in SCENARIOS]
    deadline = time.perf_counter() + seconds
    for index in range(count):
        if time.perf_counter() > deadline:
            break
        shift = index % len(order)
        for scenario, kind in order[shift:] + order[:shift]:
            try:
                samples[scenario, kind].append(fetch(connections[scenario], kind))
            except RuntimeError as exc:
                raise RuntimeError(f"{scenario}, request {index}: {exc}") from exc
    return {f"{s}/{k}": summary(values) for (s, k), values in samples.items()}


def answers(metrics: NodeMetrics) -> float:
    return sum(
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "tiermesh_answers_total"
    )


def settled_answers(metrics: NodeMetrics, expected: float, timeout_s: float = 15) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answers(metrics) >= expected:
            time.sleep(0.5)
            return answers(metrics)
        time.sleep(0.2)
    return answers(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    nodelay_backends(openai_backend._Server)
    load_before = os.getloadavg()
    metrics = NodeMetrics()
    with tempfile.TemporaryDirectory(prefix="tiermesh-bench-metrics-") as tmp:
        workdir = Path(tmp)
        backends = {name: OpenAIBackend(name) for name in ("edge", "gpu", "cloud")}
        catalog = small_catalog({n: b.port for n, b in backends.items()})
        prices = Prices.from_catalog(catalog)
        plan = evaluate_plan(catalog)
        agents: dict[str, BudgetThread] = {}
        started: list[tuple[XdsThread, EnvoyProcess]] = []
        connections: dict[str, http.client.HTTPConnection] = {}
        scraper: Scraper | None = None
        try:
            agents["off"] = agent_state(workdir, "agent-off", prices, None)
            agents["on"] = agent_state(workdir, "agent-on", prices, metrics)
            ports = {}
            for scenario in SCENARIOS:
                xds, envoy, ports[scenario], admin = start(
                    workdir, scenario, plan, agents.get(scenario)
                )
                started.append((xds, envoy))
                if scenario == "on":
                    metrics.watch_envoy(("127.0.0.1", admin))
            headers = {s: overhead_header(p, BODIES["json"]) for s, p in ports.items()}
            if headers["on"] is None or headers["off"] is not None or headers["route"] is not None:
                raise RuntimeError(f"x-tiermesh-overhead-ms where it should not be: {headers}")
            for scenario, port in ports.items():
                connections[scenario] = warm_connection(port, BODIES["json"])
                for _ in range(50):
                    fetch(connections[scenario], "stream")
            scraper = Scraper(metrics.serve("127.0.0.1", 0))
            rounds = []
            sent_on = 0
            for _ in range(args.rounds):
                before = settled_answers(metrics, answers(metrics))
                result = one_round(connections, args.count, args.seconds)
                sent = sum(result[f"on/{k}"]["requests"] for k in KINDS)
                after = settled_answers(metrics, before + sent)
                if after != before + sent:
                    raise RuntimeError(f"answers counted {after - before}, sent {sent}")
                sent_on += sent
                rounds.append(result)
                for backend in backends.values():
                    backend.received.clear()
            scraper.stop()
            scrapes, scrape_bytes = scraper.scrapes, scraper.bytes
        finally:
            if scraper is not None:
                scraper.stop()
            metrics.stop()
            for connection in connections.values():
                connection.close()
            for xds, envoy in started:
                envoy.stop()
                xds.close()
            for agent in agents.values():
                agent.close()
            for backend in backends.values():
                backend.stop()
    report(rounds, (load_before, os.getloadavg()), sent_on, scrapes, scrape_bytes, headers["on"])


def added(result: dict[str, Any], scenario: str, kind: str, key: str) -> float:
    return float(result[f"{scenario}/{kind}"][key] - result[f"route/{kind}"][key])


def report(
    rounds: list[dict[str, Any]],
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    sent_on: int,
    scrapes: int,
    scrape_bytes: int,
    sample_header: str | None,
) -> None:
    def cost(r: dict[str, Any], kind: str, key: str) -> float:
        return added(r, "on", kind, key) - added(r, "off", kind, key)

    def median_cost(kind: str, key: str) -> float:
        return statistics.median(cost(r, kind, key) for r in rounds)

    def spread(kind: str, key: str) -> str:
        return " / ".join(f"{cost(r, kind, key):+.3f}" for r in rounds)

    def load(values: tuple[float, ...]) -> str:
        return " / ".join(f"{v:.2f}" for v in values)

    headline = [
        f"| {kind} | {median_cost(kind, 'p50_ms'):+.3f} | {median_cost(kind, 'p99_ms'):+.3f} "
        f"| {spread(kind, 'p50_ms')} | {spread(kind, 'p99_ms')} |"
        for kind in KINDS
    ]
    edge = [
        f"| {kind} | {statistics.median(added(r, 'off', kind, 'p50_ms') for r in rounds):+.2f} "
        f"| {statistics.median(added(r, 'on', kind, 'p50_ms') for r in rounds):+.2f} "
        f"| {statistics.median(added(r, 'off', kind, 'p99_ms') for r in rounds):+.2f} "
        f"| {statistics.median(added(r, 'on', kind, 'p99_ms') for r in rounds):+.2f} |"
        for kind in KINDS
    ]
    per_round = [
        f"| {index} | {kind} | {result[f'route/{kind}']['requests']} | "
        + " | ".join(
            f"{result[f'{s}/{kind}']['p50_ms']:.3f} / {result[f'{s}/{kind}']['p99_ms']:.2f}"
            for s in SCENARIOS
        )
        + " |"
        for index, result in enumerate(rounds, 1)
        for kind in KINDS
    ]
    lines = [
        "# What the node's metrics cost on the edge request path (on vs off, one run)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()}; load average (1/5/15 min) "
        f"before {load(loads[0])}, after {load(loads[1])}. Requests and answers as in "
        "`edge_path.md` (a 761-byte chat with one email, JSON and six-event SSE answers). "
        "Three Envoys (1 worker each); the client, both agents and the backends share one "
        f"Python process. The metrics agent counted {sent_on} answers, exactly the requests "
        f"sent through it; `/metrics` was scraped {scrapes} times ({scrape_bytes} bytes "
        f"the last time). A sample answer header: `x-tiermesh-overhead-ms: {sample_header}`. "
        "Method: `bench/metrics_cost.py` docstring.",
        "",
        "## Metrics' cost: on minus off (median over rounds)",
        "",
        "| request | added p50 ms | added p99 ms | rounds' p50 | rounds' p99 |",
        "|---|---:|---:|---|---|",
        *headline,
        "",
        "## The edge path vs route only, metrics off and on (median over rounds)",
        "",
        "| request | p50 added, off | p50 added, on | p99 added, off | p99 added, on |",
        "|---|---:|---:|---:|---:|",
        *edge,
        "",
        "## Per round, p50 / p99 ms",
        "",
        "| round | request | requests each | route | off | on |",
        "|---:|---|---:|---:|---:|---:|",
        *per_round,
        "",
        "What the metrics put on the request path: Envoy formats one",
        "`%COMMON_DURATION%` response header per answer; the usage Lua filter matches",
        '`"model"` once in the request body it already buffers and once in the first answer',
        "chunk, writes them to dynamic metadata, and turns the microsecond header into",
        "`x-tiermesh-overhead-ms`; the ext_authz server counts each verdict before it",
        "answers Envoy (a few prometheus-client increments). Off the path: the access log",
        "carries two more tags and four more headers, and the usage server counts each entry",
        "on the agent's event loop (where it can delay a concurrent check); a scrape reads",
        "Envoy's admin and renders the registry in the HTTP server's thread.",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
