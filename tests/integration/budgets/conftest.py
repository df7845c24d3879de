"""A real Envoy with the compiled config of a node that runs ext_authz and the usage
server; backends answer with OpenAI-style ``usage``; the cloud tier costs money."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.authz.conftest import Reply, post_chat, wait_routes_served
from tests.integration.budgets.backend import UsageBackend
from tests.integration.budgets.harness import BudgetThread
from tests.integration.compiler.conftest import NODE, small_catalog
from tests.support.xdsthread import XdsThread
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.agents.usage import Prices, TenantUsage
from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.controlplane.model import AuthzSettings, MeshModel, NodeSettings, UsageSettings
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, render_bootstrap

CLOUD_PRICE = {"input": 1.0, "output": 2.0}
"""USD per 1000 tokens: one answer (120 + 30 tokens) costs 0.18 USD."""
TINY_BUDGET = 0.1
NOBODY = {"x-tiermesh-tenant": "nobody"}
"""A tenant the catalogs do not know."""
"""``acme``'s budget: one cloud answer spends it."""


def priced_catalog(ports: dict[str, int]) -> Catalog:
    """:func:`small_catalog` with a priced cloud tier, ``acme`` on a tiny budget and a
    second tenant ``globex`` with a large one."""
    catalog = small_catalog(ports)
    backends = tuple(
        b.model_copy(
            update={"cost_per_1k_tokens": b.cost_per_1k_tokens.model_copy(update=CLOUD_PRICE)}
        )
        if b.name == "cloud"
        else b
        for b in catalog.backends
    )
    (acme,) = catalog.tenants
    tenants = (
        acme.model_copy(update={"monthly_budget_usd": TINY_BUDGET}),
        acme.model_copy(update={"name": "globex", "monthly_budget_usd": 100.0}),
    )
    return catalog.model_copy(update={"backends": backends, "tenants": tenants})


@dataclass
class BudgetMesh:
    backends: dict[str, UsageBackend]
    plan: Plan
    listener: int
    agent: BudgetThread

    def chain(self, route: str) -> list[str]:
        (match,) = [r for r in self.plan.routes if r.name == route]
        return [step.backend for step in match.chain]

    def send(self, headers: dict[str, str], body: bytes) -> Reply:
        return post_chat(self.listener, headers, body)

    def wait_tokens(self, tenant: str, tokens: int, timeout_s: float = 10) -> TenantUsage:
        """The tenant's totals once they reach ``tokens`` and the budget file ext_authz reads
        shows their spend (access logs arrive after the answer, batched; the ledger writes
        the file from a worker thread just after it counts)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            totals = self.agent.totals(tenant)
            if totals.tokens >= tokens and self._file_spent(tenant) >= totals.spent_usd:
                return totals
            time.sleep(0.05)
        raise AssertionError(f"{tenant}: {self.agent.totals(tenant)} after {timeout_s} s")

    def _file_spent(self, tenant: str) -> float:
        try:
            entry = json.loads(self.agent.budget_file.read_text()).get(tenant, {})
        except (OSError, ValueError):
            return -1.0
        return float(entry.get("spent_usd", -1.0))


@pytest.fixture
def budget_mesh(tmp_path: Path) -> Iterator[BudgetMesh]:
    backends = {name: UsageBackend(name) for name in ("edge", "gpu", "cloud")}
    catalog = priced_catalog({n: b.port for n, b in backends.items()})
    agent = BudgetThread(tmp_path, Prices.from_catalog(catalog))
    xds = XdsThread()
    try:
        plan = evaluate_plan(catalog)
        listener = free_port()
        settings = NodeSettings(
            app_port=listener,
            authz=AuthzSettings(port=agent.authz_port),
            usage=UsageSettings(port=agent.usage_port, flush_interval_ms=50),
        )
        model = MeshModel.build([plan], {NODE: settings})
        xds.set_snapshot(NODE, compile_and_verify(model, NODE, catalog))
        spec = BootstrapSpec(
            node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=free_port()
        )
        with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE) as envoy:
            envoy.wait_ready(timeout=20)
            mesh = BudgetMesh(backends, plan, listener, agent)
            # A tenant the catalog does not know is refused, and nothing is accounted.
            wait_routes_served(listener, NOBODY, lambda status: status != 503)
            yield mesh
    finally:
        xds.close()
        agent.close()
        for backend in backends.values():
            backend.stop()
