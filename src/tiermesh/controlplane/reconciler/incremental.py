"""Node events without a full reconcile: what one successful reconcile leaves behind,
and which nodes a change of some nodes' registrations touches.

A full reconcile plans and compiles every node. After it, a registration change (a
join, a leave, a health flip, new ports) changes the inputs of few nodes:

- the changed nodes themselves (their :class:`~tiermesh.controlplane.api.NodeInfo`, so
  their plan, and their compiler settings);
- the nodes whose inbound mesh listener admits a changed node: a callee's settings
  depend on whose plans call it (:func:`~tiermesh.controlplane.model.plan_callers`,
  :func:`~tiermesh.controlplane.model.plan_probe_paths`), so a callee is recompiled
  when its callers or their probe paths change;
- with a :class:`~tiermesh.controlplane.reconciler.HealthAwareCompiler`, the nodes
  whose plans use a backend hosted by a node whose health changed.

Every other node's plan input, plan, settings and compile input is as it was, so its
snapshot is as well: :func:`touched_nodes` names the nodes to recompile, and
:class:`FleetState` keeps the plans, the loaded engine and the planner (with its node
classes) of the reconcile that produced the served snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from tiermesh.controlplane.api import Catalog, NodeInfo, Plan, TenantUsage
from tiermesh.controlplane.bundle import BundleOutcome, Finding
from tiermesh.controlplane.bundle.evaluate import NodePlanner
from tiermesh.controlplane.model import backends_hosted_by, plan_callers, plan_probe_paths
from tiermesh.controlplane.store import Bundle
from tiermesh.rego import PolicyEngine
from tiermesh.xds import Snapshot

__all__ = [
    "FleetState",
    "Replanned",
    "callee_node_id",
    "fleet_state",
    "health_touched",
    "mesh_touched",
]


def callee_node_id(spiffe_id: str) -> str | None:
    """The node id of ``spiffe://<trust-domain>/node/<id>``; None for other IDs."""
    head, sep, node_id = spiffe_id.rpartition("/node/")
    return node_id if sep and head.startswith("spiffe://") and "/" not in node_id else None


@dataclass(slots=True)
class FleetState:
    """What the latest successful reconcile planned and served, for node events.

    Owned by the reconciler; ``engine`` stays loaded with ``bundle`` and ``usage``
    (``planner`` evaluates with it) until the state is replaced, then it is closed.
    """

    bundle: Bundle
    usage: Mapping[str, TenantUsage]
    catalog: Catalog
    engine: PolicyEngine
    planner: NodePlanner
    nodes: dict[str, NodeInfo]
    """Every planned node (static nodes overlaid by registrations), by id."""
    unhealthy: frozenset[str]
    skipped: set[str]
    plans: dict[str, Plan]
    snapshots: dict[str, Snapshot]
    warnings: dict[str, tuple[Finding, ...]]
    """Each node's warnings (violations when they are not refused, plan warnings)."""
    other_warnings: tuple[Finding, ...] = ()
    """Warnings of the pass that name no node (documents, data)."""
    callers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    probes: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def bind_calls(self) -> None:
        """Recompute :attr:`callers` and :attr:`probes` from :attr:`plans`."""
        self.callers = plan_callers(self.plans.values())
        self.probes = plan_probe_paths(self.plans.values())


def _changed_keys(
    before: Mapping[str, frozenset[str]], after: Mapping[str, frozenset[str]]
) -> set[str]:
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def mesh_touched(
    before_callers: Mapping[str, frozenset[str]],
    before_probes: Mapping[str, frozenset[str]],
    plans: Iterable[Plan],
) -> tuple[set[str], Mapping[str, frozenset[str]], Mapping[str, frozenset[str]]]:
    """Node ids whose callers or probe paths differ between the ``before`` maps and
    ``plans``; and the callers and probe paths of ``plans``."""
    plans = list(plans)
    callers = plan_callers(plans)
    probes = plan_probe_paths(plans)
    changed = _changed_keys(before_callers, callers) | _changed_keys(before_probes, probes)
    ids = {node_id for spiffe in changed if (node_id := callee_node_id(spiffe)) is not None}
    return ids, callers, probes


def health_touched(catalog: Catalog, plans: Mapping[str, Plan], flipped: Set[str]) -> set[str]:
    """Node ids whose plans use a backend hosted by a node in ``flipped`` (nodes whose
    health changed)."""
    if not flipped:
        return set()
    down = backends_hosted_by(catalog, flipped)
    if not down:
        return set()
    uses: dict[int, tuple[object, bool]] = {}
    touched: set[str] = set()
    for node_id, plan in plans.items():
        seen = uses.get(id(plan.backends))
        if seen is None or seen[0] is not plan.backends:
            seen = (plan.backends, any(b.name in down for b in plan.backends))
            uses[id(plan.backends)] = seen
        if seen[1]:
            touched.add(node_id)
    return touched


@dataclass(frozen=True, slots=True)
class Replanned:
    """What re-planning the nodes of some node events gave (see the reconciler)."""

    plans: dict[str, Plan]
    snapshots: dict[str, Snapshot]
    errors: tuple[Finding, ...]
    warnings: dict[str, tuple[Finding, ...]]
    callers: Mapping[str, frozenset[str]]
    probes: Mapping[str, frozenset[str]]


def fleet_state(
    bundle: Bundle,
    usage: Mapping[str, TenantUsage],
    engine: PolicyEngine,
    outcome: BundleOutcome,
    *,
    unhealthy: frozenset[str],
    skipped: Sequence[str],
) -> FleetState:
    """The incremental state a successful full reconcile leaves (``outcome`` is ok)."""
    if outcome.planner is None or outcome.documents.catalog is None:
        raise ValueError("an incremental state needs an evaluation that planned")
    per_node: dict[str, list[Finding]] = {}
    other: list[Finding] = []
    for warning in outcome.warnings:
        if warning.node is None:
            other.append(warning)
        else:
            per_node.setdefault(warning.node, []).append(warning)
    fleet = FleetState(
        bundle=bundle,
        usage=usage,
        catalog=outcome.documents.catalog,
        engine=engine,
        planner=outcome.planner,
        nodes={node.id: node for node in outcome.nodes},
        unhealthy=unhealthy,
        skipped=set(skipped),
        plans=dict(outcome.plans),
        snapshots=dict(outcome.snapshots),
        warnings={node: tuple(found) for node, found in per_node.items()},
        other_warnings=tuple(other),
    )
    fleet.bind_calls()
    return fleet
