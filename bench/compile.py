"""What compiling a large plan costs: plan → MeshModel → Snapshot → verification.

Builds a synthetic catalog and plan directly in Python (no Rego): ``--tenants`` tenants
(default 1000) x ``--routes`` routes each (default 10, restricted ones included) over
``--backends`` backends (default 100: 10 % local, 20 % private cleared for restricted,
70 % cloud), chains of up to 4 steps. Each stage repeats until ``--count`` runs or
``--seconds`` have passed, whichever comes first, and reports the median.
Writes a markdown table to ``bench/results/compile.md``.

    .venv/bin/python bench/compile.py [--tenants 1000] [--routes 10] [--backends 100]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google.protobuf

from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import AuthzSettings, MeshModel, NodeSettings
from tiermesh.controlplane.verify import verify_snapshot
from tiermesh.xds import typeurls

NODE = "edge-1"
RESULTS = Path(__file__).parent / "results" / "compile.md"
TIERS = {"local": 0.1, "private": 0.2, "cloud": 0.7}
RESILIENCE: dict[str, Any] = {
    "circuit_breaker": {
        "max_connections": 8,
        "max_pending": 8,
        "max_requests": 8,
        "max_retries": 2,
    },
    "outlier_detection": {
        "consecutive_5xx": 5,
        "interval_ms": 10000,
        "base_ejection_ms": 30000,
        "max_ejection_percent": 50,
    },
}
HEALTH = {"interval_ms": 5000, "timeout_ms": 1000, "unhealthy_threshold": 2, "healthy_threshold": 1}
RETRIES = {"count": 1, "backoff_base_ms": 50, "backoff_max_ms": 500}


def backends(count: int) -> list[dict[str, Any]]:
    found = []
    for index in range(count):
        share = index / count
        tier = "local" if share < 0.1 else "private" if share < 0.3 else "cloud"
        found.append(
            {
                "name": f"{tier}-{index:03d}",
                "tier": tier,
                "region": "eu-west",
                "residency": "eu",
                "cost_per_1k_tokens": {"input": 0, "output": 0},
                "capacity": 8,
                "models": ["m"],
                "max_complexity": 5,
                "max_sensitivity": "restricted" if tier != "cloud" else "public",
                # Loopback: a local or private backend elsewhere would need a spiffe_id.
                "endpoint": {"host": f"127.0.{index // 250}.{index % 250 + 1}", "port": 8000},
            }
        )
    return found


def build(tenants: int, routes: int, backend_count: int) -> tuple[Catalog, Plan]:
    tier_defaults = {
        "timeout_ms": 30000,
        "first_byte_timeout_ms": 3000,
        "retries": RETRIES,
        **RESILIENCE,
        "health_check": HEALTH,
    }
    raw_backends = backends(backend_count)
    catalog = Catalog.model_validate(
        {
            "defaults": {"tiers": dict.fromkeys(TIERS, tier_defaults), "default_task": "task0"},
            "backends": raw_backends,
            "tenants": [
                {
                    "name": f"t{t:04d}",
                    "residency": ["eu"],
                    "monthly_budget_usd": 100,
                    "allowed_tiers": ["local", "private", "cloud"],
                    "restricted_tiers": ["local", "private"],
                }
                for t in range(tenants)
            ],
            "tasks": [{"name": f"task{k}", "complexity": 1} for k in range(routes)],
        }
    )
    cleared = [b for b in raw_backends if b["tier"] != "cloud"]

    def step(backend: dict[str, Any], last: bool) -> dict[str, Any]:
        return {
            "backend": backend["name"],
            "tier": backend["tier"],
            "model": None,
            "degraded": False,
            "timeout_ms": 30000,
            "retries": RETRIES,
            "hedge": None if last else {"per_try_timeout_ms": 3000},
        }

    plan_routes = []
    for t in range(tenants):
        for r in range(routes):
            restricted = r % 3 == 2
            pool = cleared if restricted else raw_backends
            start = (t * 7 + r * 13) % len(pool)
            picks = [pool[(start + k * 17) % len(pool)] for k in range(1 + (t + r) % 4)]
            unique = list({b["name"]: b for b in picks}.values())
            chain = [step(b, i == len(unique) - 1) for i, b in enumerate(unique)]
            sensitivity = "restricted" if restricted else ("public", "internal")[r % 2]
            plan_routes.append(
                {
                    "name": f"t{t:04d}.{sensitivity}.task{r}.*",
                    "match": {
                        "tenant": f"t{t:04d}",
                        "sensitivity": sensitivity,
                        "task": f"task{r}",
                        "model": "*",
                    },
                    "chain": chain,
                    "fail_closed": restricted,
                    "budget_exhausted": False,
                    "budget_fallback": chain[:1],
                    "rate_limit": {
                        "tokens_per_fill": 10,
                        "fill_interval_ms": 1000,
                        "max_tokens": 20,
                    },
                }
            )
    used = {s["backend"] for route in plan_routes for s in route["chain"]}
    plan = Plan.model_validate(
        {
            "node": {"id": NODE, "tier": "local", "region": "eu-west"},
            "routes": plan_routes,
            "backends": [
                {
                    "name": b["name"],
                    "tier": b["tier"],
                    "region": b["region"],
                    "residency": b["residency"],
                    "endpoint": b["endpoint"],
                    "spiffe_id": None,
                    **RESILIENCE,
                    "health_check": {**HEALTH, "path": "/v1/models"},
                }
                for b in raw_backends
                if b["name"] in used
            ],
            "violations": [],
            "warnings": [],
        }
    )
    return catalog, plan


def timed(fn: Callable[[], object], count: int, seconds: float) -> tuple[float, int]:
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while len(samples) < count and (not samples or time.monotonic() < deadline):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--routes", type=int, default=10)
    parser.add_argument("--backends", type=int, default=100)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    catalog, plan = build(args.tenants, args.routes, args.backends)
    # ext_authz: a node without it compiles to one 503 route, which measures nothing.
    settings = {NODE: NodeSettings(app_port=10000, authz=AuthzSettings(port=9191))}
    model = MeshModel.build([plan], settings)
    snapshot = compile_snapshot(model, NODE)
    assert verify_snapshot(snapshot, catalog) == []

    stages: list[tuple[str, Callable[[], object]]] = [
        ("MeshModel.build", lambda: MeshModel.build([plan], settings)),
        (
            "compile_snapshot (5 generators + encode + consistency)",
            lambda: compile_snapshot(model, NODE),
        ),
        ("verify_snapshot", lambda: verify_snapshot(snapshot, catalog)),
        (
            "plan → verified snapshot (all of the above)",
            lambda: verify_snapshot(
                compile_snapshot(MeshModel.build([plan], settings), NODE), catalog
            ),
        ),
    ]
    rows = []
    for label, fn in stages:
        median, runs = timed(fn, args.count, args.seconds)
        rows.append(f"| {label} | {median * 1e3:,.0f} ms | {runs} |")
        print(rows[-1])

    envoy_routes = sum(
        len(h.routes) for h in snapshot.resource(typeurls.ROUTE, "tiermesh-app").virtual_hosts
    )
    sizes = {
        typeurls.SHORT_NAMES[t]: sum(len(r.any_bytes) for r in snapshot.encoded(t).values())
        for t in typeurls.PUSH_ORDER
    }
    text = "\n".join(
        [
            "# Compiler: plan → verified snapshot",
            "",
            f"`bench/compile.py --tenants {args.tenants} --routes {args.routes} "
            f"--backends {args.backends} --count {args.count} --seconds {args.seconds}`; "
            "the plan is built in Python (no Rego).",
            "",
            f"Machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPUs, "
            f"Python {platform.python_version()}, protobuf {google.protobuf.__version__}. "
            "Single thread. Median of the runs.",
            "",
            f"Plan: {len(plan.routes):,} routes, {len(plan.backends)} backends → "
            f"{envoy_routes:,} Envoy routes (restricted twins, budget routes), "
            f"{len(snapshot.names(typeurls.CLUSTER)):,} clusters "
            f"({len(model.node(NODE).chains):,} aggregates). Encoded sizes: "
            + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items() if v)
            + ".",
            "",
            "| stage | median | runs |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
    RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
