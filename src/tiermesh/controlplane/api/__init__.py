"""Contracts between tiermesh processes and policies: versioned, dependency-free.

Only pydantic and the standard library are imported here, so agents, the control
plane and tools can share these models without pulling in each other.

- :class:`Catalog` — backends, tenants, aliases, task types (``data.catalog``);
  :func:`load_catalog` reads one from YAML.
- :class:`PlanInput` / :class:`Plan` — input and decision of the compile-time
  routing policy at :data:`PLAN_PATH`.
- :class:`TenantUsage` — spend counters (``data.usage``).
"""

from __future__ import annotations

from tiermesh.controlplane.api._base import Name, Sensitivity, Tier
from tiermesh.controlplane.api.catalog import (
    CATALOG_VERSION,
    Backend,
    BackendResilience,
    Catalog,
    Defaults,
    Endpoint,
    ModelAlias,
    RouteResilience,
    TaskType,
    Tenant,
    TierDefaults,
    TokenCost,
    reference_problems,
)
from tiermesh.controlplane.api.document import policy_data
from tiermesh.controlplane.api.errors import CatalogError, CatalogProblem, ContractError
from tiermesh.controlplane.api.loader import load_catalog, parse_catalog
from tiermesh.controlplane.api.plan import (
    MATCH_HEADERS,
    PLAN_PATH,
    PLAN_VERSION,
    BackendPlan,
    ChainStep,
    NodeInfo,
    Plan,
    PlanInput,
    RouteMatch,
    RoutePlan,
)
from tiermesh.controlplane.api.resilience import (
    CircuitBreaker,
    HealthCheck,
    HealthCheckTiming,
    Hedge,
    OutlierDetection,
    RateLimit,
    RetryPolicy,
)
from tiermesh.controlplane.api.schemas import SCHEMA_MODELS, render_schemas
from tiermesh.controlplane.api.usage import TenantUsage, Usage

__all__ = [
    "CATALOG_VERSION",
    "MATCH_HEADERS",
    "PLAN_PATH",
    "PLAN_VERSION",
    "SCHEMA_MODELS",
    "Backend",
    "BackendPlan",
    "BackendResilience",
    "Catalog",
    "CatalogError",
    "CatalogProblem",
    "ChainStep",
    "CircuitBreaker",
    "ContractError",
    "Defaults",
    "Endpoint",
    "HealthCheck",
    "HealthCheckTiming",
    "Hedge",
    "ModelAlias",
    "Name",
    "NodeInfo",
    "OutlierDetection",
    "Plan",
    "PlanInput",
    "RateLimit",
    "RetryPolicy",
    "RouteMatch",
    "RoutePlan",
    "RouteResilience",
    "Sensitivity",
    "TaskType",
    "Tenant",
    "TenantUsage",
    "Tier",
    "TierDefaults",
    "TokenCost",
    "Usage",
    "load_catalog",
    "parse_catalog",
    "policy_data",
    "reference_problems",
    "render_schemas",
]
