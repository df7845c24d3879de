"""Which nodes' plans call which node: the callers a node's inbound mTLS listener admits.

A node calls another when its plan has an upstream (a backend) pinned to that node's
SPIFFE ID over TLS (``spiffe_id`` set, ``endpoint.tls``): exactly the backends whose
clusters present the node's SVID (:func:`~tiermesh.controlplane.generators.mesh_tls.
uses_mesh_tls`). Nothing else of a plan makes a node a caller, and a node of the ``cloud``
tier never is one, whatever its plan says: a cloud gateway must never reach a local or
private model server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from tiermesh.controlplane.api import BackendPlan, Plan

__all__ = ["admitted_peers", "plan_callers", "plan_probe_paths"]


def _pinned(backends: tuple[BackendPlan, ...]) -> frozenset[str]:
    return frozenset(b.spiffe_id for b in backends if b.spiffe_id and b.endpoint.tls)


def plan_callers(plans: Iterable[Plan]) -> Mapping[str, frozenset[str]]:
    """Callee SPIFFE ID → ids of the nodes whose plans have a backend pinned to it.

    Pure; cost linear in the distinct ``backends`` tuples plus the plans (plans of one
    evaluation pass share their tuples, so a fleet of nodes of one class walks its
    backends once)."""
    pinned: dict[int, tuple[tuple[BackendPlan, ...], frozenset[str]]] = {}
    callers: dict[str, set[str]] = {}
    for plan in plans:
        if plan.node.tier == "cloud":
            continue
        seen = pinned.get(id(plan.backends))
        if seen is None or seen[0] is not plan.backends:
            seen = (plan.backends, _pinned(plan.backends))
            pinned[id(plan.backends)] = seen
        for callee in seen[1]:
            callers.setdefault(callee, set()).add(plan.node.id)
    return MappingProxyType({callee: frozenset(ids) for callee, ids in callers.items()})


def plan_probe_paths(plans: Iterable[Plan]) -> Mapping[str, frozenset[str]]:
    """Callee SPIFFE ID → the health-check paths the callers' plans check its pinned
    backends on (those without a query: a probe route matches the path alone). Pure."""
    paths: dict[str, set[str]] = {}
    seen: set[int] = set()
    for plan in plans:
        if plan.node.tier == "cloud" or id(plan.backends) in seen:
            continue
        seen.add(id(plan.backends))
        for backend in plan.backends:
            path = backend.health_check.path
            if backend.spiffe_id and backend.endpoint.tls and "?" not in path and "#" not in path:
                paths.setdefault(backend.spiffe_id, set()).add(path)
    return MappingProxyType({callee: frozenset(found) for callee, found in paths.items()})


def admitted_peers(
    candidates: tuple[str, ...],
    node_id: str,
    trust_domain: str,
    callers: Mapping[str, frozenset[str]],
) -> tuple[str, ...]:
    """The ``candidates`` (SPIFFE IDs the registry allows: registered, of the trust domain,
    not cloud) that belong to a node in ``callers`` of ``node_id``'s SPIFFE ID
    (``spiffe://<trust_domain>/node/<node_id>``), in the candidates' order. Never
    ``node_id`` itself."""
    prefix = f"spiffe://{trust_domain}/node/"
    calling = callers.get(prefix + node_id, frozenset())
    return tuple(
        peer
        for peer in candidates
        if peer.startswith(prefix)
        and (caller := peer.removeprefix(prefix)) in calling
        and caller != node_id
    )
