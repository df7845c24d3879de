"""Time to evaluate the routing plan of one node, per engine and catalog.

Loads policies/ with a catalog into one engine (regorus, and the OPA library when it
is installed), evaluates ``data.tiermesh.routing.plan`` once to warm up, then times
``--rounds`` evaluations for each node of a fixed set, on the calling thread. No
etcd, no compiler: this is the policy's own cost, the part of a reconcile that
grows with nodes x routes. Results go to bench/results/policy_eval.md.

``--dump FILE`` writes every plan (JSON, per engine, catalog and node) so that two
versions of the policy can be compared byte for byte.

Run from the repository root: ``.venv/bin/python bench/policy_eval.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.rego.test_properties import random_catalog  # noqa: E402
from tests.unit.reconciler.policyfiles import SMALL_CATALOG  # noqa: E402

from tiermesh.controlplane.api import (  # noqa: E402
    PLAN_PATH,
    Catalog,
    TenantUsage,
    load_catalog,
    policy_data,
)
from tiermesh.rego import (  # noqa: E402
    EngineUnavailable,
    JSONValue,
    OpaLibraryEngine,
    PolicyEngine,
    RegorusEngine,
)

POLICY_DIR = ROOT / "policies"
NODES: list[dict[str, Any]] = [
    {"id": "edge-1", "tier": "local", "region": "eu-west", "residency": ["eu"]},
    {"id": "gpu-1", "tier": "private", "region": "eu-west", "residency": ["eu"]},
    {"id": "cloud-gw", "tier": "cloud", "region": "us-east", "residency": ["us"]},
]


def modules(directory: Path = POLICY_DIR) -> dict[str, str]:
    return {
        f"policies/{path.relative_to(directory)}": path.read_text(encoding="utf-8")
        for path in sorted(directory.rglob("*.rego"))
    }


def catalogs(seeds: int) -> dict[str, tuple[Catalog, dict[str, TenantUsage]]]:
    demo = load_catalog(POLICY_DIR / "data" / "catalog.yaml")
    small = Catalog.model_validate(__import__("yaml").safe_load(SMALL_CATALOG))
    found = {
        "demo": (demo, {}),
        "demo, initech spent": (demo, {"initech": TenantUsage(spent_usd=7.5)}),
        "small": (small, {}),
    }
    for seed in range(seeds):
        catalog = random_catalog(seed)
        found[f"random {seed}"] = (
            catalog,
            {catalog.tenants[0].name: TenantUsage(spent_usd=10)},
        )
    return found


def new_engine(kind: str) -> PolicyEngine | None:
    if kind == "regorus":
        return RegorusEngine()
    try:
        return OpaLibraryEngine()
    except EngineUnavailable:
        return None


def measure(
    engine: PolicyEngine, rounds: int, dump: dict[str, JSONValue], key: str
) -> tuple[float, float, int]:
    """Median and max seconds per node evaluation, and the routes of the first node."""
    samples: list[float] = []
    routes = 0
    for node in NODES:
        plan = engine.evaluate(PLAN_PATH, {"version": "v1", "node": node})
        dump[f"{key} / {node['id']}"] = plan
        if isinstance(plan, dict) and isinstance(plan.get("routes"), list) and not routes:
            routes = len(plan["routes"])
        for _ in range(rounds):
            began = time.perf_counter()
            engine.evaluate(PLAN_PATH, {"version": "v1", "node": node})
            samples.append(time.perf_counter() - began)
    return statistics.median(samples), max(samples), routes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="timed evaluations per node")
    parser.add_argument("--opa-rounds", type=int, default=None, help="rounds on OPA")
    parser.add_argument("--seeds", type=int, default=6, help="random catalogs to include")
    parser.add_argument("--only", default=None, help="only catalogs whose name starts so")
    parser.add_argument("--engines", default="regorus,opa")
    parser.add_argument("--dump", type=Path, default=None, help="write every plan as JSON")
    parser.add_argument("--policies", type=Path, default=POLICY_DIR, help="Rego to evaluate")
    args = parser.parse_args()
    sources = modules(args.policies)
    dump: dict[str, JSONValue] = {}
    rows: list[str] = []
    for kind in args.engines.split(","):
        rounds = args.rounds if kind == "regorus" or args.opa_rounds is None else args.opa_rounds
        for name, (catalog, usage) in catalogs(args.seeds).items():
            if args.only and not name.startswith(args.only):
                continue
            engine = new_engine(kind)
            if engine is None:
                print(f"{kind}: not installed, skipped", file=sys.stderr)
                break
            try:
                engine.load(sources, policy_data(catalog, usage))
                median, worst, routes = measure(engine, rounds, dump, f"{kind} / {name}")
            finally:
                engine.close()
            row = (
                f"| {kind} | {name} | {routes} | {rounds} x {len(NODES)} "
                f"| {median * 1000:.1f} | {worst * 1000:.1f} |"
            )
            rows.append(row)
            print(row, flush=True)
    if args.dump is not None:
        by_engine: dict[str, dict[str, JSONValue]] = {}
        for key, plan in dump.items():
            kind, rest = key.split(" / ", 1)
            by_engine.setdefault(kind, {})[rest] = plan
        args.dump.write_text(json.dumps(by_engine, sort_keys=True, indent=1))
        kinds = list(by_engine)
        if len(kinds) == 2:
            same = by_engine[kinds[0]] == by_engine[kinds[1]]
            print(f"plans identical between {kinds[0]} and {kinds[1]}: {same}")
    print(f"Machine: {platform.platform()}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
