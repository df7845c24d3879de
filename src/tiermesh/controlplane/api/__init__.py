"""Contracts between tiermesh processes and policies: versioned, dependency-free.

Only pydantic and the standard library are imported here, so agents, the control
plane and tools can share these models without pulling in each other.

- :class:`Catalog` — backends, tenants, aliases, task types (``data.catalog``);
  :func:`load_catalog` reads one from YAML.
- :class:`PlanInput` / :class:`Plan` — input and decision of the compile-time
  routing policy at :data:`PLAN_PATH`.
- :class:`TenantUsage` — spend counters (``data.usage``).
- :class:`NodeRegistration` / :class:`NodeLoad` — what a node registers and reports over
  the registry session (:class:`SessionMessage`, :class:`SessionReply`);
  :class:`RegisteredNode` — what the control plane stores for it.
- :class:`RequestPolicyBundle` — the served bundle's request policy a node fetches
  (:class:`RequestPolicyQuery`) when a :class:`BundleRef` is announced;
  :class:`ApiKeyEntry` — a tenant API key's digest in it (:func:`parse_api_key`).
- :class:`DecisionRecord` — one audited decision, hash-chained and signed;
  :class:`ShipRequest` / :class:`ShipResponse` — how nodes ship them.
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
    JwtIssuer,
    ModelAlias,
    RemoteJwks,
    RouteResilience,
    TaskType,
    Tenant,
    TierDefaults,
    TokenCost,
    reference_problems,
)
from tiermesh.controlplane.api.decision import (
    AUDIT_SERVICE,
    DECISION_LOG_VERSION,
    GENESIS_HASH,
    MAX_SHIP_BYTES,
    MAX_SHIP_RECORDS,
    SHIP_METHOD,
    DecisionKind,
    DecisionRecord,
    ShipRequest,
    ShipResponse,
    audit_method_path,
    canonical_bytes,
    record_hash,
    signature_valid,
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
from tiermesh.controlplane.api.registry import (
    MAX_SESSION_MESSAGE_BYTES,
    MAX_USAGE_AMOUNT,
    MAX_USAGE_TENANTS,
    NODE_REGISTRY_SERVICE,
    REGISTRY_VERSION,
    SESSION_METHOD,
    NodeEndpoint,
    NodeLoad,
    NodeRegistration,
    RegisteredNode,
    SessionMessage,
    SessionReply,
    UsageAck,
    UsageDelta,
    UsageMonth,
    UsageReport,
    UsageTotal,
    endpoint_owner,
    registry_method_path,
    usage_month,
)
from tiermesh.controlplane.api.request_policy import (
    MAX_REQUEST_MODULES,
    MAX_REQUEST_POLICY_BYTES,
    REQUEST_POLICY_FOLDER,
    REQUEST_POLICY_METHOD,
    BundleRef,
    RequestPolicyBundle,
    RequestPolicyQuery,
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
from tiermesh.controlplane.api.surface import OPENAI_API, ApiEndpoint, HttpMethod
from tiermesh.controlplane.api.tenant_keys import (
    API_KEY_PREFIX,
    MAX_API_KEYS,
    ApiKeyEntry,
    ParsedKey,
    key_digest,
    new_api_key,
    parse_api_key,
    verify_digest,
)
from tiermesh.controlplane.api.usage import TenantUsage, Usage

__all__ = [
    "API_KEY_PREFIX",
    "AUDIT_SERVICE",
    "CATALOG_VERSION",
    "DECISION_LOG_VERSION",
    "GENESIS_HASH",
    "MATCH_HEADERS",
    "MAX_API_KEYS",
    "MAX_REQUEST_MODULES",
    "MAX_REQUEST_POLICY_BYTES",
    "MAX_SESSION_MESSAGE_BYTES",
    "MAX_SHIP_BYTES",
    "MAX_SHIP_RECORDS",
    "MAX_USAGE_AMOUNT",
    "MAX_USAGE_TENANTS",
    "NODE_REGISTRY_SERVICE",
    "OPENAI_API",
    "PLAN_PATH",
    "PLAN_VERSION",
    "REGISTRY_VERSION",
    "REQUEST_POLICY_FOLDER",
    "REQUEST_POLICY_METHOD",
    "SCHEMA_MODELS",
    "SESSION_METHOD",
    "SHIP_METHOD",
    "ApiEndpoint",
    "ApiKeyEntry",
    "Backend",
    "BackendPlan",
    "BackendResilience",
    "BundleRef",
    "Catalog",
    "CatalogError",
    "CatalogProblem",
    "ChainStep",
    "CircuitBreaker",
    "ContractError",
    "DecisionKind",
    "DecisionRecord",
    "Defaults",
    "Endpoint",
    "HealthCheck",
    "HealthCheckTiming",
    "Hedge",
    "HttpMethod",
    "JwtIssuer",
    "ModelAlias",
    "Name",
    "NodeEndpoint",
    "NodeInfo",
    "NodeLoad",
    "NodeRegistration",
    "OutlierDetection",
    "ParsedKey",
    "Plan",
    "PlanInput",
    "RateLimit",
    "RegisteredNode",
    "RemoteJwks",
    "RequestPolicyBundle",
    "RequestPolicyQuery",
    "RetryPolicy",
    "RouteMatch",
    "RoutePlan",
    "RouteResilience",
    "Sensitivity",
    "SessionMessage",
    "SessionReply",
    "ShipRequest",
    "ShipResponse",
    "TaskType",
    "Tenant",
    "TenantUsage",
    "Tier",
    "TierDefaults",
    "TokenCost",
    "Usage",
    "UsageAck",
    "UsageDelta",
    "UsageMonth",
    "UsageReport",
    "UsageTotal",
    "audit_method_path",
    "canonical_bytes",
    "endpoint_owner",
    "key_digest",
    "load_catalog",
    "new_api_key",
    "parse_api_key",
    "parse_catalog",
    "policy_data",
    "record_hash",
    "reference_problems",
    "registry_method_path",
    "render_schemas",
    "signature_valid",
    "usage_month",
    "verify_digest",
]
