"""The compile-time routing decision in compact form (:class:`CompactPlan`).

A node's route table repeats itself: tenants whose settings agree get the same routes
but for the tenant, and a few distinct chain steps make up every chain. Tenants whose
settings differ only in their steps' resilience (timeouts, retries, hedges) still have
routes of one shape: the same backends in the same order, each step with their own
settings. The routing policy therefore also answers at :data:`COMPACT_PLAN_PATH` with
each such part once:

- ``steps``: step groups, each a table of chain steps by id (the shipped policy gives
  every group the same ids: one per backend, model and place in a chain; each group
  has its own settings);
- ``route_sets``: route lists without the tenant (a :class:`RouteTemplate` is named and
  matched without it; its chains are lists of step ids);
- ``tenants``: in route order, each tenant, the route set it takes and its step group.

:meth:`CompactPlan.expand` gives the :class:`~tiermesh.controlplane.api.Plan` the decision
stands for: for each entry of ``tenants`` in order, the routes of its set in order, each
named ``<tenant>.<template name>``, matched on the tenant as well, with every step id
replaced by its step in the tenant's group. The shipped policy defines ``plan`` as
exactly this expansion, so both answers describe one table; a policy without
``compact_plan`` is evaluated at ``plan`` instead. The compact answer is ~100x smaller
at 16 000 routes of cloned tenants (0.15 MB against 26 MB of JSON), which is what makes
a big table cheap to evaluate, decode and validate; tenants that differ only in
resilience overrides add a step group each (24 steps for the demo's backends), not a
route set.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from tiermesh.controlplane.api._base import Contract, Name, Sensitivity
from tiermesh.controlplane.api.plan import (
    BackendPlan,
    CascadePlan,
    ChainStep,
    NodeInfo,
    Plan,
    RouteMatch,
    RoutePlan,
)
from tiermesh.controlplane.api.resilience import RateLimit

__all__ = [
    "COMPACT_PLAN_PATH",
    "CompactPlan",
    "RouteTemplate",
    "TemplateMatch",
    "TenantRoutes",
]

COMPACT_PLAN_PATH = "data.tiermesh.routing.compact_plan"
"""Where the routing policy's compact decision lives (optional: a policy without it is
evaluated at :data:`~tiermesh.controlplane.api.PLAN_PATH`)."""


class TemplateMatch(Contract):
    """A :class:`~tiermesh.controlplane.api.RouteMatch` without the tenant."""

    sensitivity: Sensitivity
    """Data class (``x-tiermesh-sensitivity``)."""
    task: Name | Literal["*"]
    """Task type (``x-tiermesh-task``) or ``*``."""
    model: Name | Literal["*"]
    """Model alias (``x-tiermesh-model``) or ``*``."""


class RouteTemplate(Contract):
    """A route of a route set: a :class:`~tiermesh.controlplane.api.RoutePlan` without the
    tenant, its chains as step ids."""

    name: str = Field(min_length=1)
    """The route's name after ``<tenant>.`` (``<sensitivity>.<task>.<model>``)."""
    match: TemplateMatch
    """Which requests of the tenant it takes."""
    chain: tuple[str, ...]
    """Ids (keys of each group of :attr:`CompactPlan.steps`) of the chain's steps, in
    order."""
    fail_closed: bool
    """As :attr:`~tiermesh.controlplane.api.RoutePlan.fail_closed`."""
    budget_exhausted: bool
    """As :attr:`~tiermesh.controlplane.api.RoutePlan.budget_exhausted`."""
    budget_fallback: tuple[str, ...]
    """Ids of the budget fallback chain's steps, in order."""
    rate_limit: RateLimit | None
    """As :attr:`~tiermesh.controlplane.api.RoutePlan.rate_limit`."""
    cascade: CascadePlan | None = None
    """As :attr:`~tiermesh.controlplane.api.RoutePlan.cascade`."""


class TenantRoutes(Contract):
    """One tenant's part of the table: the route set it takes, with the steps of its
    step group."""

    tenant: Name
    """The tenant."""
    routes: str
    """Its route set (a key of :attr:`CompactPlan.route_sets`)."""
    steps: str
    """Its step group (a key of :attr:`CompactPlan.steps`): the steps its route set's
    ids stand for."""


class CompactPlan(Contract):
    """A :class:`~tiermesh.controlplane.api.Plan` with its repeated parts stored once
    (module docstring). Validation refuses a route set, a step group, or a step id in a
    tenant's group, that the decision does not define."""

    version: Literal["v1"] = "v1"
    """Plan format version."""
    node: NodeInfo
    """The node it was made for (echo of the input)."""
    steps: dict[str, dict[str, ChainStep]]
    """Every chain step of the table: by step group, then by id."""
    route_sets: dict[str, tuple[RouteTemplate, ...]]
    """Route lists without the tenant, by name."""
    tenants: tuple[TenantRoutes, ...]
    """Each tenant's route set and step group, in route order."""
    backends: tuple[BackendPlan, ...]
    """As :attr:`~tiermesh.controlplane.api.Plan.backends`."""
    violations: tuple[str, ...]
    """As :attr:`~tiermesh.controlplane.api.Plan.violations`."""
    warnings: tuple[str, ...]
    """As :attr:`~tiermesh.controlplane.api.Plan.warnings`."""

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        checked: set[tuple[str, str]] = set()
        for index, entry in enumerate(self.tenants):
            if entry.routes not in self.route_sets:
                raise ValueError(f"tenants[{index}] names route set {entry.routes!r}, not defined")
            group = self.steps.get(entry.steps)
            if group is None:
                raise ValueError(f"tenants[{index}] names step group {entry.steps!r}, not defined")
            pair = (entry.routes, entry.steps)
            if pair in checked:
                continue
            checked.add(pair)
            for at, template in enumerate(self.route_sets[entry.routes]):
                for field in ("chain", "budget_fallback"):
                    for step in getattr(template, field):
                        if step not in group:
                            raise ValueError(
                                f"route_sets[{entry.routes!r}][{at}].{field} names step "
                                f"{step!r}, not defined in step group {entry.steps!r} "
                                f"(of tenants[{index}])"
                            )
        return self

    def expand(self) -> Plan:
        """The :class:`~tiermesh.controlplane.api.Plan` this decision stands for (module
        docstring): equal to validating the expanded JSON, without validating each route
        again (every part was validated here, and a route or plan has no validator
        across its fields). Routes with equal chains in one step group share one tuple
        of steps."""
        chains: dict[tuple[str, tuple[str, ...]], tuple[ChainStep, ...]] = {}

        def chain(group: str, ids: tuple[str, ...]) -> tuple[ChainStep, ...]:
            key = (group, ids)
            found = chains.get(key)
            if found is None:
                steps = self.steps[group]
                found = chains[key] = tuple(steps[step] for step in ids)
            return found

        # Per route set: its routes and matches, made for the first tenant taking it (its
        # routes are these), with that tenant's step group; the other tenants' routes are
        # copies, each with its own name and tenant, and its own group's chains where its
        # group is another.
        prototypes: dict[str, tuple[str, list[tuple[RoutePlan, RouteMatch, RouteTemplate]]]] = {}
        routes: list[RoutePlan] = []
        append = routes.append
        for entry in self.tenants:
            tenant, group = entry.tenant, entry.steps
            known = prototypes.get(entry.routes)
            if known is None:
                made: list[tuple[RoutePlan, RouteMatch, RouteTemplate]] = []
                prototypes[entry.routes] = (group, made)
                for template in self.route_sets[entry.routes]:
                    match = template.match
                    matched = RouteMatch.model_construct(
                        tenant=tenant,
                        sensitivity=match.sensitivity,
                        task=match.task,
                        model=match.model,
                    )
                    extra: dict[str, Any] = (
                        {"cascade": template.cascade}
                        if "cascade" in template.model_fields_set
                        else {}
                    )
                    route = RoutePlan.model_construct(
                        name=f"{tenant}.{template.name}",
                        match=matched,
                        chain=chain(group, template.chain),
                        fail_closed=template.fail_closed,
                        budget_exhausted=template.budget_exhausted,
                        budget_fallback=chain(group, template.budget_fallback),
                        rate_limit=template.rate_limit,
                        **extra,
                    )
                    made.append((route, matched, template))
                    append(route)
                continue
            made_for, made = known
            tenant_update = {"tenant": tenant}
            for route, matched, template in made:
                update: dict[str, Any] = {
                    "name": f"{tenant}.{template.name}",
                    "match": matched.model_copy(update=tenant_update),
                }
                if group != made_for:
                    update["chain"] = chain(group, template.chain)
                    update["budget_fallback"] = chain(group, template.budget_fallback)
                append(route.model_copy(update=update))
        return Plan.model_construct(
            version=self.version,
            node=self.node,
            routes=tuple(routes),
            backends=self.backends,
            violations=self.violations,
            warnings=self.warnings,
        )
