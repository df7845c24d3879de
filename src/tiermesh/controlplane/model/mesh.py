"""The immutable mesh model: every node's plan, settings and the clusters they imply.

Built once per change (bundle, catalog, usage or topology) and then only read: the
generators are pure functions of it, and any number of threads or tasks may share one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from types import MappingProxyType

from tiermesh.controlplane.api import (
    OPENAI_API,
    ApiEndpoint,
    BackendPlan,
    Catalog,
    ChainStep,
    JwtIssuer,
    Plan,
)
from tiermesh.controlplane.model import names
from tiermesh.controlplane.model.errors import PlanMismatch, UnknownNode
from tiermesh.controlplane.model.settings import NodeSettings

__all__ = ["Chain", "MeshModel", "NodeModel", "Upstream", "backends_hosted_by"]


@dataclass(frozen=True, slots=True)
class Upstream:
    """One backend cluster, shared by every chain that calls the backend (so its circuit
    breaker counts all of the node's requests to the backend)."""

    name: str
    backend: BackendPlan


@dataclass(frozen=True, slots=True)
class Chain:
    """An aggregate cluster failing over through ``members`` (upstream cluster names)."""

    name: str
    members: tuple[str, ...]


def _member(step: ChainStep) -> str:
    return names.upstream_cluster(step.backend)


@dataclass(frozen=True, slots=True)
class NodeModel:
    """What one node's snapshot is compiled from. Immutable; sorted by name throughout."""

    node_id: str
    plan: Plan
    settings: NodeSettings
    backends: Mapping[str, BackendPlan]
    upstreams: tuple[Upstream, ...]
    chains: tuple[Chain, ...]

    def target(self, steps: Sequence[ChainStep]) -> str:
        """Cluster a route sends ``steps`` to: the only backend's, or the chain's aggregate.

        ``steps`` must be non-empty and come from this node's plan.
        """
        members = tuple(_member(step) for step in steps)
        if len(members) == 1:
            return members[0]
        return names.chain_cluster(members)

    @classmethod
    def build(cls, plan: Plan, settings: NodeSettings) -> NodeModel:
        """Derive the clusters of ``plan``; raise :class:`PlanMismatch` when it cannot compile.

        Refused: a chain step naming a backend missing from ``plan.backends``, a step whose
        tier differs from its backend's, a SPIFFE-checked TLS backend without
        ``settings.trust_bundle_pem``, and a backend whose credential is missing from
        ``settings.credentials``.
        """
        node_id = plan.node.id
        backends = {backend.name: backend for backend in plan.backends}
        upstreams: dict[str, Upstream] = {}
        chains: dict[str, Chain] = {}
        # Chains already derived, by identity (routes of an expanded compact plan share
        # their chain tuples) and by their steps' backends and tiers (all a chain adds,
        # and all that makes it wrong): a repeated chain adds nothing, and the first
        # route with it raised already if it is wrong. Holding each keeps its id unique.
        derived: dict[int, Sequence[ChainStep]] = {}
        derived_shapes: set[tuple[tuple[str, str], ...]] = set()
        for route in plan.routes:
            for steps in (route.chain, route.budget_fallback):
                if derived.get(id(steps)) is steps:
                    continue
                derived[id(steps)] = steps
                shape = tuple((step.backend, step.tier) for step in steps)
                if shape in derived_shapes:
                    continue
                derived_shapes.add(shape)
                for step in steps:
                    backend = backends.get(step.backend)
                    if backend is None:
                        raise PlanMismatch(
                            node_id, f"route {route.name!r} names unknown backend {step.backend!r}"
                        )
                    if backend.tier != step.tier:
                        raise PlanMismatch(
                            node_id,
                            f"route {route.name!r} calls {step.backend!r} tier {step.tier!r}, "
                            f"but the backend is {backend.tier!r}",
                        )
                    name = _member(step)
                    upstreams.setdefault(name, Upstream(name, backend))
                if len(steps) > 1:
                    members = tuple(_member(step) for step in steps)
                    chain = Chain(names.chain_cluster(members), members)
                    chains.setdefault(chain.name, chain)
        for upstream in upstreams.values():
            backend = upstream.backend
            credential = backend.credential
            if credential is not None and credential.secret not in settings.credentials:
                raise PlanMismatch(
                    node_id,
                    f"backend {backend.name!r} needs the API key {credential.secret!r}, "
                    "but the node settings hold no such credential",
                )
            if (
                backend.endpoint.tls
                and backend.spiffe_id
                and settings.trust_bundle_pem is None
                and settings.mesh is None  # the bundle then comes from the agent's local SDS
            ):
                raise PlanMismatch(
                    node_id,
                    f"backend {backend.name!r} must present {backend.spiffe_id}, "
                    "but the node settings hold no trust bundle",
                )
        return cls(
            node_id=node_id,
            plan=plan,
            settings=settings,
            backends=MappingProxyType(dict(sorted(backends.items()))),
            upstreams=tuple(upstreams[name] for name in sorted(upstreams)),
            chains=tuple(chains[name] for name in sorted(chains)),
        )


def backends_hosted_by(catalog: Catalog, node_ids: Set[str]) -> frozenset[str]:
    """Names of the catalog backends whose ``node`` is one of ``node_ids``. Pure."""
    if not node_ids:
        return frozenset()
    return frozenset(b.name for b in catalog.backends if b.node is not None and b.node in node_ids)


@dataclass(frozen=True, slots=True)
class MeshModel:
    """Every node's :class:`NodeModel`, by node id, and which backends are down. Immutable
    and safe to share.

    ``unhealthy_backends`` names the backends whose hosting node (the catalog backend's
    ``node``) reports its model server unhealthy; their endpoints are served as
    ``UNHEALTHY`` to every node. Empty (the default) serves every endpoint as before,
    without a health status.

    ``api`` is the catalog's API surface (:data:`~tiermesh.controlplane.api.OPENAI_API` by
    default): the only paths and methods the nodes route.

    ``jwt_issuers`` are the catalog's JWT issuers: nodes with a request-time policy verify
    tokens of them in Envoy (``jwt_authn``) before ext_authz; empty compiles no such filter.
    """

    nodes: Mapping[str, NodeModel]
    unhealthy_backends: frozenset[str] = frozenset()
    api: tuple[ApiEndpoint, ...] = OPENAI_API
    jwt_issuers: tuple[JwtIssuer, ...] = ()

    @classmethod
    def build(
        cls,
        plans: Iterable[Plan],
        settings: Mapping[str, NodeSettings],
        *,
        unhealthy_backends: Set[str] = frozenset(),
        api: Sequence[ApiEndpoint] = OPENAI_API,
        jwt_issuers: Sequence[JwtIssuer] = (),
    ) -> MeshModel:
        """One model from the evaluated plans (one per node), each node's settings and the
        backends reported unhealthy (see :func:`backends_hosted_by`).

        Raises :class:`PlanMismatch` for two plans of one node, a plan without settings,
        or a plan that cannot compile (see :meth:`NodeModel.build`).
        """
        nodes: dict[str, NodeModel] = {}
        for plan in plans:
            node_id = plan.node.id
            if node_id in nodes:
                raise PlanMismatch(node_id, "two plans for one node")
            if node_id not in settings:
                raise PlanMismatch(node_id, "no node settings (app listener port)")
            nodes[node_id] = NodeModel.build(plan, settings[node_id])
        return cls(
            MappingProxyType(dict(sorted(nodes.items()))),
            frozenset(unhealthy_backends),
            tuple(api),
            tuple(jwt_issuers),
        )

    def node(self, node_id: str) -> NodeModel:
        """The model of ``node_id``; raises :class:`UnknownNode` when there is none."""
        try:
            return self.nodes[node_id]
        except KeyError:
            raise UnknownNode(node_id, tuple(self.nodes)) from None
