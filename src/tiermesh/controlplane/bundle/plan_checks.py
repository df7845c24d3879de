"""Structural checks of a plan that its schema cannot express (the fallback chains)."""

from __future__ import annotations

from collections import Counter

from tiermesh.controlplane.api import Backend, Catalog, ChainStep, Plan

__all__ = ["plan_problems"]


def _chain_problems(
    route: str,
    label: str,
    chain: tuple[ChainStep, ...],
    *,
    planned: set[str],
    known: dict[str, Backend],
    max_length: int,
) -> list[str]:
    problems: list[str] = []
    for position, step in enumerate(chain, start=1):
        where = f"route {route}: {label} step {position}"
        backend = known.get(step.backend)
        if backend is None:
            problems.append(f"{where} names unknown backend {step.backend}")
            continue
        if step.backend not in planned:
            problems.append(f"{where}: backend {step.backend} is missing from plan.backends")
        if step.tier != backend.tier:
            problems.append(
                f"{where}: backend {step.backend} is {backend.tier}, the plan says {step.tier}"
            )
    for name, count in sorted(Counter(step.backend for step in chain).items()):
        if count > 1:
            problems.append(f"route {route}: {label} holds backend {name} {count} times")
    if len(chain) > max_length:
        problems.append(
            f"route {route}: {label} has {len(chain)} steps, over max_chain_length {max_length}"
        )
    return problems


def plan_problems(plan: Plan, catalog: Catalog) -> list[str]:
    """Problems of ``plan`` against ``catalog``; empty when sound.

    Checked per route, for its chain and its budget fallback: every step names a catalog
    backend listed in ``plan.backends`` with the catalog's tier; no backend twice; no more
    steps than ``defaults.max_chain_length``; a fail-closed route reaches no cloud backend.
    Route names are unique. Empty chains are the policy's own violations, not repeated here.

    A chain found sound once is not checked again for later routes (whether a chain is
    sound depends on its steps' backends and tiers alone, not on the route or label):
    the routes of a plan expanded from a compact plan share a few dozen chain tuples per
    step group, and the groups' chains differ only in settings.
    """
    problems: list[str] = []
    planned = {backend.name for backend in plan.backends}
    known = {backend.name: backend for backend in catalog.backends}
    max_length = catalog.defaults.max_chain_length
    sound: set[int] = set()  # ids of chains of plan.routes (held by the plan meanwhile)
    sound_shapes: set[tuple[tuple[str, str], ...]] = set()  # their (backend, tier)s
    for name, count in sorted(Counter(route.name for route in plan.routes).items()):
        if count > 1:
            problems.append(f"route {name} appears {count} times")
    for route in plan.routes:
        for label, chain in (("chain", route.chain), ("budget fallback", route.budget_fallback)):
            if id(chain) not in sound:
                shape = tuple((step.backend, step.tier) for step in chain)
                found = (
                    []
                    if shape in sound_shapes
                    else _chain_problems(
                        route.name,
                        label,
                        chain,
                        planned=planned,
                        known=known,
                        max_length=max_length,
                    )
                )
                if found:
                    problems += found
                else:
                    sound.add(id(chain))
                    sound_shapes.add(shape)
            if route.fail_closed:
                problems += [
                    f"route {route.name}: fail-closed {label} reaches cloud backend {step.backend}"
                    for step in chain
                    if step.tier == "cloud"
                ]
    return problems
