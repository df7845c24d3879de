"""The peer target's catalog: the demo's, changed only where a benchmark harness's
backends differ from the demo's (no rate limit; capacity, breaker and health checks of
the two on-box backends), and its measured traffic still takes primary → fallback."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.unit.compiler.plans import evaluate_plan
from tiermesh.controlplane.api import Catalog
from tiermesh.demo.catalog import EDGE_BACKEND, PRIVATE_BACKEND, DemoEndpoint, demo_catalog
from tiermesh.demo.edge_target import (
    BENCH_CAPACITY,
    BENCH_CIRCUIT_BREAKER,
    BENCH_HEALTH_CHECK,
    TARGET_HEADERS,
    peer_catalog,
)

SHIPPED = Path(__file__).resolve().parents[3] / "policies" / "data" / "catalog.yaml"
PRIMARY, FALLBACK = 18101, 18102


def _demo() -> dict[str, Any]:
    shipped = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    endpoints = {
        EDGE_BACKEND: DemoEndpoint(PRIMARY, node="edge-1"),
        PRIVATE_BACKEND: DemoEndpoint(FALLBACK),
    }
    return demo_catalog(shipped, endpoints)


def test_only_rate_limits_and_the_on_box_backends_change() -> None:
    demo = _demo()
    before = copy.deepcopy(demo)
    peer = peer_catalog(demo)
    assert demo == before  # the argument is left as it was
    assert peer["defaults"]["rate_limit"] is None
    assert all("rate_limit" not in tenant for tenant in peer["tenants"])
    backends = {b["name"]: b for b in peer["backends"]}
    for name in (EDGE_BACKEND, PRIVATE_BACKEND):
        assert backends[name]["capacity"] == BENCH_CAPACITY
        assert backends[name]["resilience"]["circuit_breaker"] == BENCH_CIRCUIT_BREAKER
        assert backends[name]["resilience"]["health_check"] == BENCH_HEALTH_CHECK
    originals = {b["name"]: b for b in demo["backends"]}
    for name, backend in backends.items():
        if name not in (EDGE_BACKEND, PRIVATE_BACKEND):
            assert backend == originals[name]
    unchanged = ("tasks", "aliases", "version")
    assert {k: peer.get(k) for k in unchanged} == {k: demo.get(k) for k in unchanged}
    assert [{k: v for k, v in t.items() if k != "rate_limit"} for t in demo["tenants"]] == peer[
        "tenants"
    ]


def test_measured_traffic_goes_primary_then_fallback_on_the_edge_node() -> None:
    plan = evaluate_plan(Catalog.model_validate(peer_catalog(_demo())))
    chains = [
        [step.backend for step in route.chain]
        for route in plan.routes
        if route.match.tenant == TARGET_HEADERS["x-tiermesh-tenant"]
        and route.match.sensitivity == TARGET_HEADERS["x-tiermesh-sensitivity"]
        and route.match.task == TARGET_HEADERS["x-tiermesh-task"]
        and route.match.model == "*"
    ]
    assert len(chains) == 1
    assert chains[0][:2] == [EDGE_BACKEND, PRIVATE_BACKEND]
    endpoints = {b.name: (b.endpoint.port, b.endpoint.tls) for b in plan.backends}
    assert endpoints[EDGE_BACKEND] == (PRIMARY, False)
    assert endpoints[PRIVATE_BACKEND] == (FALLBACK, False)
