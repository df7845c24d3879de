"""The node's metrics through a real Envoy with the compiled config, ext_authz and the
usage server: known traffic moves each counter and histogram by exactly what was sent
(a cloud answer, a restricted request, a PII request, an exhausted budget, a fallback
after the cloud stopped, a fail-closed 503), and answers carry
``x-tiermesh-overhead-ms``."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.authz.conftest import chat, wait_routes_served
from tests.integration.budgets.backend import COMPLETION_TOKENS, PROMPT_TOKENS, UsageBackend
from tests.integration.budgets.conftest import NOBODY, priced_catalog
from tests.integration.budgets.harness import BudgetThread
from tests.integration.compiler.conftest import NODE
from tests.support.xdsthread import XdsThread
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.agents.metrics import NodeMetrics
from tiermesh.agents.metrics.envoy_stats import envoy_families
from tiermesh.agents.usage import Prices
from tiermesh.controlplane.api import telemetry
from tiermesh.controlplane.model import AuthzSettings, MeshModel, NodeSettings, UsageSettings
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, render_bootstrap

pytestmark = pytest.mark.envoy

ENVOY_STATS = (
    Path(__file__).resolve().parents[2] / "unit" / "metrics" / "entries" / "envoy_stats.prom"
)

Labels = dict[str, str]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


@dataclass
class MetricsMesh:
    backends: dict[str, UsageBackend]
    listener: int
    agent: BudgetThread
    metrics: NodeMetrics

    def send(self, headers: dict[str, str], body: bytes) -> Answer:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.listener}/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return Answer(response.status, dict(response.headers), response.read().decode())
        except urllib.error.HTTPError as exc:
            with exc:
                return Answer(exc.code, dict(exc.headers), exc.read().decode())

    def total(self, sample: str, **labels: str) -> float:
        """The sum of ``sample`` over every label set that includes ``labels``."""
        found = 0.0
        for family in self.metrics.registry.collect():
            for s in family.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                    found += s.value
        return found

    def wait_logged(self, before: float, count: int = 1, limit_s: float = 10) -> None:
        """Until ``count`` more access-log entries than ``before`` were observed."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.total("tiermesh_edge_requests_total") >= before + count:
                time.sleep(0.1)  # an extra entry would show up now
                assert self.total("tiermesh_edge_requests_total") == before + count
                return
            time.sleep(0.02)
        raise AssertionError(f"{count} access-log entries not observed within {limit_s} s")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[MetricsMesh]:
    backends = {name: UsageBackend(name) for name in ("edge", "gpu", "cloud")}
    catalog = priced_catalog({n: b.port for n, b in backends.items()})
    metrics = NodeMetrics()
    agent = BudgetThread(tmp_path, Prices.from_catalog(catalog), metrics)
    xds = XdsThread()
    try:
        listener = free_port()
        settings = NodeSettings(
            app_port=listener,
            authz=AuthzSettings(port=agent.authz_port),
            usage=UsageSettings(port=agent.usage_port, flush_interval_ms=20),
        )
        model = MeshModel.build([evaluate_plan(catalog)], {NODE: settings})
        xds.set_snapshot(NODE, compile_and_verify(model, NODE, catalog))
        admin = free_port()
        spec = BootstrapSpec(
            node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=admin
        )
        metrics.watch_envoy(("127.0.0.1", admin))
        with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE) as envoy:
            envoy.wait_ready(timeout=20)
            wait_routes_served(listener, NOBODY, lambda status: status != 503)
            built = MetricsMesh(backends, listener, agent, metrics)
            time.sleep(0.2)  # the probes' entries arrive before the test starts counting
            yield built
    finally:
        xds.close()
        agent.close()
        for backend in backends.values():
            backend.stop()


def headers(tenant: str, sensitivity: str, task: str = "reasoning") -> dict[str, str]:
    return {
        "x-tiermesh-tenant": tenant,
        "x-tiermesh-sensitivity": sensitivity,
        "x-tiermesh-task": task,
    }


class Deltas:
    """Reads many samples before and after one step."""

    def __init__(self, mesh: MetricsMesh, *wanted: tuple[str, Labels]) -> None:
        self.mesh = mesh
        self.wanted = wanted
        self.before = [mesh.total(name, **labels) for name, labels in wanted]

    def after(self) -> list[float]:
        return [
            self.mesh.total(name, **labels) - before
            for (name, labels), before in zip(self.wanted, self.before, strict=True)
        ]


CLOUD: Labels = {"backend": "cloud", "tier": "cloud", "tenant": "globex"}


def test_a_cloud_answer_moves_every_genai_histogram_once(mesh: MetricsMesh) -> None:
    logged = mesh.total("tiermesh_edge_requests_total")
    deltas = Deltas(
        mesh,
        ("tiermesh_answers_total", {**CLOUD, "position": "first", "reason": "none"}),
        ("gen_ai_client_token_usage_count", {**CLOUD, "gen_ai_token_type": "input"}),
        ("gen_ai_client_token_usage_sum", {**CLOUD, "gen_ai_token_type": "input"}),
        ("gen_ai_client_token_usage_sum", {**CLOUD, "gen_ai_token_type": "output"}),
        ("gen_ai_client_operation_duration_seconds_count", CLOUD),
        ("gen_ai_server_request_duration_seconds_count", CLOUD),
        ("gen_ai_server_time_to_first_token_seconds_count", CLOUD),
        ("gen_ai_server_time_per_output_token_seconds_count", CLOUD),
        ("gen_ai_client_operation_time_to_first_chunk_seconds_count", CLOUD),
        ("tiermesh_overhead_seconds_count", {}),
        ("tiermesh_authz_decisions_total", {"outcome": "allow", "status": "200"}),
        ("tiermesh_authz_duration_seconds_count", {"hop": "app"}),
        (
            "tiermesh_sensitivity_decisions_total",
            {"declared": "public", "floor": "public", "effective": "public"},
        ),
        # Envoy's own count, re-exposed as it is.
        ("envoy_cluster_upstream_rq_total", {"envoy_cluster_name": "cloud"}),
        ("tiermesh_envoy_stats_up", {}),
    )
    answer = mesh.send(headers("globex", "public"), chat("Explain Fermat's little theorem"))
    assert (answer.status, answer.headers.get("x-tiermesh-tier")) == (200, "cloud")
    mesh.wait_logged(logged)
    # A JSON answer: no streamed chunk, so no time to first chunk.
    expected = [1, 1, PROMPT_TOKENS, COMPLETION_TOKENS, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0]
    assert deltas.after() == expected
    assert mesh.total("tiermesh_envoy_stats_up") == 1
    # The dashboard test reads Envoy's metric names from a captured copy: still what Envoy says.
    live = {f.name for f in mesh.metrics.registry.collect() if f.name.startswith("envoy_")}
    captured = {f.name for f in envoy_families(ENVOY_STATS.read_text(encoding="utf-8"))}
    assert live == captured
    overhead = answer.headers.get(telemetry.OVERHEAD_HEADER, "")
    assert re.fullmatch(r"[0-9]+\.[0-9]{3}", overhead), answer.headers
    assert telemetry.OVERHEAD_US_HEADER not in {k.lower() for k in answer.headers}
    assert 0 < float(overhead) < 1000
    models = {"gen_ai_request_model": "m", "gen_ai_operation_name": "chat"}
    assert mesh.total("gen_ai_client_operation_duration_seconds_count", **models) >= 1


def test_a_streamed_answer_is_timed_to_its_first_chunk(mesh: MetricsMesh) -> None:
    logged = mesh.total("tiermesh_edge_requests_total")
    deltas = Deltas(
        mesh,
        ("gen_ai_client_operation_time_to_first_chunk_seconds_count", CLOUD),
        ("gen_ai_client_operation_time_per_output_chunk_seconds_count", CLOUD),
        ("gen_ai_client_token_usage_sum", {**CLOUD, "gen_ai_token_type": "output"}),
    )
    asked = {"include_usage": True}
    answer = mesh.send(
        headers("globex", "public"), chat("Stream it", stream=True, stream_options=asked)
    )
    assert answer.status == 200
    mesh.wait_logged(logged)
    assert deltas.after() == [1, 1, COMPLETION_TOKENS]


def test_restricted_and_pii_requests_count_their_sensitivity_and_findings(
    mesh: MetricsMesh,
) -> None:
    logged = mesh.total("tiermesh_edge_requests_total")
    deltas = Deltas(
        mesh,
        (
            "tiermesh_sensitivity_decisions_total",
            {"declared": "restricted", "floor": "restricted", "effective": "restricted"},
        ),
        (
            "tiermesh_sensitivity_decisions_total",
            {"declared": "public", "floor": "restricted", "effective": "restricted"},
        ),
        ("tiermesh_pii_findings_total", {"kind": "email", "where": "body"}),
        ("tiermesh_sensitivity_reasons_total", {"reason": "pii_body"}),
        ("tiermesh_answers_total", {"tier": "cloud"}),
        ("tiermesh_answers_total", {"tenant": "globex"}),
    )
    restricted = mesh.send(headers("globex", "restricted"), chat("our merger plans"))
    pii = mesh.send(headers("globex", "public"), chat("write to jane.doe@example.com"))
    assert restricted.status == pii.status == 200
    assert {restricted.headers["x-tiermesh-tier"], pii.headers["x-tiermesh-tier"]} <= {
        "local",
        "private",
    }
    mesh.wait_logged(logged, 2)
    assert deltas.after() == [1, 1, 1, 1, 0, 2]


def test_an_exhausted_budget_is_answered_by_the_fallback_and_counted_as_budget(
    mesh: MetricsMesh,
) -> None:
    logged = mesh.total("tiermesh_edge_requests_total")
    first = mesh.send(headers("acme", "public"), chat("one cloud answer spends it"))
    assert first.headers.get("x-tiermesh-tier") == "cloud"
    mesh.wait_logged(logged)
    deadline = time.monotonic() + 10
    while mesh.total("tiermesh_tenant_budget_remaining_usd", tenant="acme") > 0:
        assert time.monotonic() < deadline, "acme's budget never showed as spent"
        time.sleep(0.05)
    assert mesh.total("tiermesh_tenant_spent_usd", tenant="acme") == pytest.approx(0.18)
    assert mesh.total("tiermesh_tenant_budget_usd", tenant="acme") == pytest.approx(0.1)
    deltas = Deltas(
        mesh,
        ("tiermesh_answers_total", {"tenant": "acme", "position": "fallback", "reason": "budget"}),
        ("tiermesh_answers_total", {"tenant": "acme"}),
    )
    logged = mesh.total("tiermesh_edge_requests_total")
    second = mesh.send(headers("acme", "public"), chat("now the fallback"))
    assert second.status == 200
    assert second.headers.get("x-tiermesh-tier") != "cloud"
    mesh.wait_logged(logged)
    assert deltas.after() == [1, 1]


def test_a_stopped_cloud_falls_back_and_restricted_traffic_fails_closed(
    mesh: MetricsMesh,
) -> None:
    mesh.backends["cloud"].stop()
    logged = mesh.total("tiermesh_edge_requests_total")
    deltas = Deltas(
        mesh,
        ("tiermesh_answers_total", {"tenant": "globex", "position": "fallback"}),
        ("tiermesh_answers_total", {"tenant": "globex", "reason": "upstream_error"}),
        ("tiermesh_answers_total", {"tier": "cloud"}),
    )
    answer = mesh.send(headers("globex", "public"), chat("the cloud is gone"))
    assert answer.status == 200
    assert answer.headers.get("x-tiermesh-tier") != "cloud"
    mesh.wait_logged(logged)
    assert deltas.after() == [1, 1, 0]

    mesh.backends["edge"].stop()
    mesh.backends["gpu"].stop()
    logged = mesh.total("tiermesh_edge_requests_total")
    closed = Deltas(
        mesh,
        ("tiermesh_fail_closed_total", {}),
        ("tiermesh_answers_total", {}),
        ("tiermesh_edge_requests_total", {"code": "503", "answered": "local"}),
    )
    refused = mesh.send(headers("globex", "restricted"), chat("secret, nowhere to go"))
    assert refused.status == 503
    mesh.wait_logged(logged)
    assert closed.after() == [1, 0, 1]
