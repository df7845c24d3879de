"""The compile-time routing decision: its input (:class:`PlanInput`) and result (:class:`Plan`).

The policy ``data.tiermesh.routing.plan`` reads ``input`` (a :class:`PlanInput`),
``data.catalog`` (a :class:`~tiermesh.controlplane.api.Catalog`) and
``data.usage`` (:class:`~tiermesh.controlplane.api.Usage`), and produces a
:class:`Plan` for one node. The plan names backends; the compiler turns routes
into Envoy routes matched on the ``x-tiermesh-*`` headers and chains into
fallback clusters, and ``backends`` into clusters.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tiermesh.controlplane.api._base import Contract, Name, Sensitivity, Tier
from tiermesh.controlplane.api.catalog import Credential, Endpoint
from tiermesh.controlplane.api.resilience import (
    CircuitBreaker,
    HealthCheck,
    Hedge,
    OutlierDetection,
    RateLimit,
    RetryPolicy,
)

__all__ = [
    "MATCH_HEADERS",
    "PLAN_PATH",
    "PLAN_VERSION",
    "BackendPlan",
    "CascadePlan",
    "ChainStep",
    "NodeInfo",
    "Plan",
    "PlanInput",
    "RouteMatch",
    "RoutePlan",
]

PLAN_VERSION = "v1"
"""Version of :class:`PlanInput` and :class:`Plan`; bumped on incompatible changes."""

PLAN_PATH = "data.tiermesh.routing.plan"
"""Where the routing policy's decision lives. Undefined when ``input.node`` is missing."""

MATCH_HEADERS: dict[str, str] = {
    "tenant": "x-tiermesh-tenant",
    "sensitivity": "x-tiermesh-sensitivity",
    "task": "x-tiermesh-task",
    "model": "x-tiermesh-model",
}
"""Request header each :class:`RouteMatch` field is matched against."""

CASCADE_STEP_HEADER = "x-tiermesh-cascade-step"
"""Request header the node's cascade handler sets on each step it asks (``0`` is the
first). Routes never match on it: a client may send it too."""
CASCADE_STEP_METADATA = ("envoy.filters.http.ext_authz", "tiermesh_cascade_step")
"""Where the per-step routes of a cascade look for their step: the dynamic metadata
(namespace, key) that the node's ext_authz server emits, holding the step's index as a
string, only for a step request that carries the handler's per-start secret. Neither a
client nor any configuration can set it, so the secret never leaves the agent process:
not in the registration, not over xDS, not in Envoy's config_dump."""


class NodeInfo(Contract):
    """The node a plan is compiled for, as it registered."""

    id: Name
    """Node id (the ``<node-id>`` of its SPIFFE ID)."""
    tier: Tier
    """The node's own tier."""
    region: str = Field(min_length=1)
    """Region; backends in the same region are preferred among equals."""
    residency: tuple[str, ...] = ()
    """Residency tags of the node's location, e.g. ``("eu",)``. Informational:
    backend residency, not node residency, decides where data is processed."""


class PlanInput(Contract):
    """The input of the compile-time policy: only what the data documents do not hold."""

    version: Literal["v1"] = "v1"
    """Input format version."""
    node: NodeInfo
    """The node to plan for."""


class RouteMatch(Contract):
    """Which requests a route takes; ``*`` matches any value or a missing header."""

    tenant: Name
    """Tenant (``x-tiermesh-tenant``)."""
    sensitivity: Sensitivity
    """Data class (``x-tiermesh-sensitivity``), always set by the request-time policy."""
    task: Name | Literal["*"]
    """Task type (``x-tiermesh-task``) or ``*``."""
    model: Name | Literal["*"]
    """Model alias (``x-tiermesh-model``) or ``*``."""


class ChainStep(Contract):
    """One backend tried by a route, in chain order."""

    backend: Name
    """Backend name; described in :attr:`Plan.backends`."""
    tier: Tier
    """The backend's tier (repeated so that invariants are checkable per route)."""
    model: str | None
    """Model name the request is rewritten to for this backend; null passes the
    requested model through (routes matching model ``*``)."""
    degraded: bool
    """True when the backend is below the task's complexity: a fallback, not a match."""
    timeout_ms: int = Field(gt=0)
    """Whole-step timeout, retries included."""
    retries: RetryPolicy
    """Retries against this backend before moving on."""
    hedge: Hedge | None
    """First-byte deadline before moving on to the next step; null on the last step."""


class CascadePlan(Contract):
    """A confidence cascade: steps answer in chain order until one is confident enough."""

    min_confidence: float = Field(gt=0, le=1)
    """Least mean top-1 token probability of an answer that is served; a less confident
    answer is dropped and the next step asked. The last step's answer is always served."""


class RoutePlan(Contract):
    """One route of the node's table: a match and the chain of backends behind it."""

    name: str = Field(min_length=1)
    """``<tenant>.<sensitivity>.<task>.<model>``, unique within the plan."""
    match: RouteMatch
    """Which requests it takes."""
    chain: tuple[ChainStep, ...]
    """Backends in order: the first healthy one answers; on failure, exhausted
    retries or a late first byte the next is tried. Empty only together with a
    violation: the route then answers 503."""
    fail_closed: bool
    """True for restricted data: when every step fails the answer is 503, and the
    chain never holds a cloud backend (nor a private one not cleared for it)."""
    budget_exhausted: bool
    """The tenant's spend had reached its budget when the plan was made; ``chain``
    is then already the cheap chain."""
    budget_fallback: tuple[ChainStep, ...]
    """Chain to use instead once the request-time policy finds the budget spent
    (cheap tiers, cheapest first); equals ``chain`` when ``budget_exhausted``."""
    rate_limit: RateLimit | None
    """The tenant's token bucket; null means unlimited."""
    cascade: CascadePlan | None = None
    """Set for routes of a ``cascade`` task with a ``min_confidence``: the chain is
    walked by confidence, not only by failure. Absent otherwise."""


class BackendPlan(Contract):
    """A backend used by at least one route, with its cluster settings."""

    name: Name
    """Backend name."""
    tier: Tier
    """Its tier."""
    region: str
    """Its region."""
    residency: str
    """Where it processes data."""
    endpoint: Endpoint
    """Where it listens."""
    spiffe_id: str | None
    """SPIFFE ID the upstream must present; null for external APIs."""
    circuit_breaker: CircuitBreaker
    """Circuit-breaker thresholds."""
    outlier_detection: OutlierDetection
    """Outlier detection."""
    health_check: HealthCheck
    """Active health check."""
    credential: Credential | None = None
    """API key reference Envoy injects upstream; absent for backends without one."""


class Plan(Contract):
    """The route table of one node, as the routing policy decided it."""

    version: Literal["v1"] = "v1"
    """Plan format version."""
    node: NodeInfo
    """The node it was made for (echo of the input)."""
    routes: tuple[RoutePlan, ...]
    """Routes in match order: the first whose match fits a request wins. A request
    matching none (e.g. an unknown tenant) is refused."""
    backends: tuple[BackendPlan, ...]
    """Every backend named by a chain, sorted by name."""
    violations: tuple[str, ...]
    """Policy violations found, sorted (e.g. a tenant with no backend within its
    residency). A control plane may refuse a plan that has any."""
    warnings: tuple[str, ...]
    """Noteworthy but allowed outcomes, sorted (degraded chains, spent budgets)."""
