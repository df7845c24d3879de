"""The Grafana dashboard and Prometheus scrape config in ``compose/`` against the code:
every metric a panel queries is one the code registers (names taken from the live
registries, so a metric renamed in code breaks this test), and Prometheus scrapes the
ports the agents and control planes serve."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import Metric

# The control plane's metric modules register in the default registry when imported.
import tiermesh.controlplane.metrics
import tiermesh.controlplane.nodeapi.registry
import tiermesh.xds.status  # noqa: F401
from tests.unit.compose.conftest import COMPOSE_DIR
from tests.unit.compose.test_cli_agreement import _control_planes
from tiermesh.agents.config import load_config, split_hostport
from tiermesh.agents.metrics import NodeMetrics
from tiermesh.agents.metrics import names as genai
from tiermesh.agents.metrics.envoy_stats import envoy_families
from tiermesh.cli.controlplane_cmd import parse_listen

DASHBOARD = COMPOSE_DIR / "grafana" / "dashboards" / "tiermesh.json"
DATASOURCES = COMPOSE_DIR / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
PROMETHEUS = COMPOSE_DIR / "prometheus.yml"
ENVOY_STATS = Path(__file__).resolve().parents[1] / "metrics" / "entries" / "envoy_stats.prom"
"""Envoy 1.40's ``/stats/prometheus`` with the agent's filter, from a real Envoy with the
compiled config (the node metrics integration test checks the live one matches)."""


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan"}  # fmt: skip


def sample_names(families: Iterator[Metric]) -> set[str]:
    """Every sample name the families can produce (histograms' ``_bucket``/``_count``/
    ``_sum``, counters' ``_total``), whether or not a sample exists yet."""
    found: set[str] = set()
    for family in families:
        if family.type == "histogram":
            found |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
        elif family.type == "counter":
            found.add(f"{family.name}_total")
        else:
            found.add(family.name)
    return found


def agent_families() -> Iterator[Metric]:
    metrics = NodeMetrics()

    class Ledger:
        def budgets(self) -> dict[str, tuple[int, float]]:
            return {"acme": (1, 1.0)}

    class Spool:
        next_seq = 1
        durable_seq = 0

    metrics.state.ledger = Ledger()
    metrics.state.spool = Spool()
    metrics.state.acknowledged = lambda: 0
    metrics.state.svid_expiry = lambda: dt.datetime.now(dt.UTC)
    yield from metrics.registry.collect()
    yield from envoy_families(ENVOY_STATS.read_text(encoding="utf-8"))


def exported() -> set[str]:
    registry: CollectorRegistry = REGISTRY
    return sample_names(agent_families()) | sample_names(registry.collect())


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])[A-Za-z_:][\w:]*", text):
        name = match.group()
        if name.lower() in _KEYWORDS or re.match(r"\s*\(", text[match.end() :]):
            continue
        names.add(name)
    return names


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def queried(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    return {
        f"{panel['title']} / {target['refId']}": metric_names(target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    }


def test_the_name_finder_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, tier) (rate(a_bucket{x="y{z}"}[5m])))'
        " / clamp_min(sum(rate(b_total[1m])), 1e-9) - time() + on (job) c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_every_queried_metric_is_exported_by_the_code(dashboard: dict[str, Any]) -> None:
    known = exported()
    found = queried(dashboard)
    assert found, "the dashboard queries nothing"
    unknown = {where: names - known for where, names in found.items() if names - known}
    assert unknown == {}
    assert all(found.values()), [where for where, names in found.items() if not names]


def test_a_renamed_metric_would_be_caught(dashboard: dict[str, Any]) -> None:
    known = exported() - {"tiermesh_answers_total"}
    used = set().union(*queried(dashboard).values())
    assert "tiermesh_answers_total" in used
    assert used - known == {"tiermesh_answers_total"}


def test_every_genai_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    used = {
        n.removesuffix("_bucket").removesuffix("_sum")
        for n in set().union(*queried(dashboard).values())
    }
    for name in (
        genai.CLIENT_TOKEN_USAGE, genai.CLIENT_OPERATION_DURATION,
        genai.CLIENT_TIME_TO_FIRST_CHUNK, genai.CLIENT_TIME_PER_OUTPUT_CHUNK,
        genai.SERVER_REQUEST_DURATION, genai.SERVER_TIME_TO_FIRST_TOKEN,
        genai.SERVER_TIME_PER_OUTPUT_TOKEN,
    ):  # fmt: skip
        prom = genai.prometheus_name(name)
        assert prom in used or f"{prom}_seconds" in used, name


def test_panels_use_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    (source,) = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert source["url"] == "http://prometheus:9090"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def test_prometheus_scrapes_what_the_agents_and_control_planes_serve(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: {t for c in job["static_configs"] for t in c["targets"]}
        for job in config["scrape_configs"]
    }
    agents = set()
    for name, service in services.items():
        if service.get("command", [])[:2] != ["agent", "run"]:
            continue
        (mounted,) = service["configs"]
        node = load_config(COMPOSE_DIR / compose["configs"][mounted["source"]]["file"])
        assert node.metrics_listen != "off", name
        host, port = split_hostport(node.metrics_listen)
        assert host == "0.0.0.0", f"{name}: Prometheus scrapes it from another container"
        agents.add(f"{name}:{port}")
        assert "monitoring" in service["networks"], name
    assert targets["tiermesh-agents"] == agents
    planes = set()
    for name, params in _control_planes(services).items():
        assert params["metrics"], f"{name} serves no /metrics for Prometheus"
        planes.add(f"{name}:{parse_listen(params['metrics'], '--metrics').port}")
        assert "monitoring" in services[name]["networks"], name
    assert targets["tiermesh-controlplane"] == planes
    assert "monitoring" in services["prometheus"]["networks"]
    assert compose["networks"]["monitoring"]["internal"] is True
