"""Routes whose chains are shared tuples (a plan expanded from the compact plan) compile
to exactly the configuration of the same plan validated from its full JSON, where no
two routes share a chain object: the generator's per-chain memo changes nothing. So do
tenants cloned from others, with the same settings (one route set, one step group) or
with their own resilience (one route set, a step group each); and each tenant's routes
are the ones the policy gives it alone."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tests.unit.compiler.plans import EDGE_NODE, demo_catalog, policy_modules
from tiermesh.controlplane.api import (
    COMPACT_PLAN_PATH,
    PLAN_PATH,
    Catalog,
    CompactPlan,
    Plan,
    RetryPolicy,
    RoutePlan,
    RouteResilience,
    TenantUsage,
    policy_data,
)
from tiermesh.controlplane.generators import compile_snapshot, routes
from tiermesh.controlplane.model import CascadeSettings, MeshModel
from tiermesh.rego import JSONValue, RegorusEngine
from tiermesh.xds import typeurls


def _many_tenants(copies: int = 1) -> Catalog:
    """The demo catalog with each tenant ``2 * copies`` times more: ``<name>-<i>``, a
    clone, and ``<name>-own-<i>``, with its own first-byte timeout and retries."""
    catalog = demo_catalog()
    clones = [
        tenant.model_copy(update={"name": f"{tenant.name}-{i}"})
        for tenant in catalog.tenants
        for i in range(copies)
    ]
    own = [
        tenant.model_copy(
            update={
                "name": f"{tenant.name}-own-{i}",
                "resilience": RouteResilience(
                    first_byte_timeout_ms=1000 + 10 * index + i,
                    retries=RetryPolicy(count=i, backoff_base_ms=10, backoff_max_ms=20 + i),
                ),
            }
        )
        for index, tenant in enumerate(catalog.tenants)
        for i in range(copies)
    ]
    return catalog.model_copy(update={"tenants": (*catalog.tenants, *clones, *own)})


def _plans(catalog: Catalog | None = None) -> tuple[Plan, Plan]:
    catalog = catalog or demo_catalog()
    # acme's budget spent: budget routes, cheap chains and cascades all occur.
    usage = {"acme": TenantUsage(spent_usd=10_000)}
    engine = RegorusEngine()
    try:
        engine.load(policy_modules(), policy_data(catalog, usage))
        request: JSONValue = {"node": dict(EDGE_NODE)}
        full = Plan.model_validate(engine.evaluate(PLAN_PATH, request))
        compact = CompactPlan.model_validate(engine.evaluate(COMPACT_PLAN_PATH, request))
    finally:
        engine.close()
    return full, compact.expand()


@pytest.mark.parametrize("many", [False, True], ids=["demo", "clones-and-own-steps"])
def test_shared_chains_compile_to_the_same_bytes(many: bool) -> None:
    full, expanded = _plans(_many_tenants() if many else None)
    assert full == expanded
    shared = {id(route.chain) for route in expanded.routes}
    assert len(shared) < len(expanded.routes)  # the memo is exercised
    chained = [route for route in full.routes if route.chain]  # () is one object
    assert len({id(route.chain) for route in chained}) == len(chained)
    snapshots = [
        compile_snapshot(MeshModel.build([plan], {EDGE: EDGE_SETTINGS}), EDGE)
        for plan in (full, expanded)
    ]
    for type_url in (typeurls.ROUTE, typeurls.CLUSTER, typeurls.LISTENER):
        first, second = (s.sotw_body(type_url, None).body for s in snapshots)
        assert first == second, type_url
    assert snapshots[0].version == snapshots[1].version


def test_routes_copied_per_tenant_equal_routes_built_per_tenant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tenants of one shape get routes copied from the first one's match (renamed, their
    own tenant matcher, their chain's action): byte for byte what building each route
    gives, cascades included, whether the tenants share steps (clones) or each has its
    own step group (its own first-byte timeout and retries: the same route set)."""
    catalog = _many_tenants(2)
    engine = RegorusEngine()
    try:
        engine.load(policy_modules(), policy_data(catalog, {}))
        request: JSONValue = {"node": dict(EDGE_NODE)}
        compact = CompactPlan.model_validate(engine.evaluate(COMPACT_PLAN_PATH, request))
        expected = Plan.model_validate(engine.evaluate(PLAN_PATH, request))
    finally:
        engine.close()
    plan = compact.expand()
    assert plan == expected
    set_of = {entry.tenant: (entry.routes, entry.steps) for entry in compact.tenants}
    for tenant in demo_catalog().tenants:  # each own-steps tenant: its original's set, own group
        own = set_of[f"{tenant.name}-own-0"], set_of[f"{tenant.name}-own-1"]
        assert own[0][0] == own[1][0] == set_of[f"{tenant.name}-0"][0]
        assert len({own[0][1], own[1][1], set_of[tenant.name][1]}) == 3
    settings = replace(EDGE_SETTINGS, cascade=CascadeSettings(port=7777))
    model = MeshModel.build([plan], {EDGE: settings})
    copied = compile_snapshot(model, EDGE).sotw_body(typeurls.ROUTE, None).body
    actions = routes._Actions
    monkeypatch.setattr(actions, "chain_route", actions._built)
    monkeypatch.setattr(
        actions,
        "refusal_route",
        lambda _self, name, plan_route, headers: routes._refusal(name, plan_route, headers),
    )
    built = compile_snapshot(model, EDGE).sotw_body(typeurls.ROUTE, None).body
    assert copied == built
    assert b"acme-1.public.cascade.fast" in copied
    assert b"acme-own-1.public.cascade.fast" in copied
    assert routes.refusal_body("globex-1.restricted.*.smart").encode() in copied


def test_chains_that_forward_alike_share_one_tail(edge_model: MeshModel) -> None:
    """A chain's forwarding part is built once per distinct outcome: chains of other
    objects whose steps differ only in what the action does not hold (model, degraded)
    share it; one setting the action holds gives another."""
    node = edge_model.node(EDGE)
    chain = next(route.chain for route in node.plan.routes if len(route.chain) > 1)
    actions = routes._Actions(node)
    built = actions.tail(chain)
    alike = tuple(
        step.model_copy(update={"model": "another", "degraded": not step.degraded})
        for step in chain
    )
    assert actions.tail(alike) is built
    first = chain[0]
    assert first.hedge is not None
    for update in (
        {"timeout_ms": first.timeout_ms + 1},
        {"hedge": first.hedge.model_copy(update={"per_try_timeout_ms": 1234})},
        {"retries": first.retries.model_copy(update={"count": first.retries.count + 1})},
        {"retries": first.retries.model_copy(update={"retry_on": ("gateway-error",)})},
        {"retries": first.retries.model_copy(update={"backoff_base_ms": 1})},
    ):
        other = (first.model_copy(update=update), *chain[1:])
        tail = actions.tail(other)
        assert tail is not built
        assert tail == routes._Actions(node).tail(other)  # as a fresh memo builds it
    assert actions.tail(chain[:1]) != built


def test_each_tenant_gets_the_routes_it_gets_alone() -> None:
    """Sharing route sets and step groups between tenants changes no tenant's routes: in
    the many-tenant table each tenant's routes are those of a catalog of it alone."""
    catalog = _many_tenants()
    _full, expanded = _plans(catalog)
    by_tenant: dict[str, list[RoutePlan]] = {}
    for route in expanded.routes:
        by_tenant.setdefault(route.match.tenant, []).append(route)
    assert set(by_tenant) == {tenant.name for tenant in catalog.tenants}
    for tenant in catalog.tenants:
        _alone_full, alone = _plans(catalog.model_copy(update={"tenants": (tenant,)}))
        assert by_tenant[tenant.name] == list(alone.routes), tenant.name
