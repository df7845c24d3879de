"""The control plane's audit trail: collecting, storing, verifying and replaying decisions.

- :class:`AuditCollector` (+ :func:`start_audit_collector`): the mTLS gRPC service nodes
  ship their signed records to; a node may ship only its own.
- :class:`AuditStore`: the SQLite database, queried with :class:`AuditQuery`.
- :func:`verify_store`: every chain of a database verified (:class:`StoreVerification`).
- :func:`verify_chain`: names the first record of a node's chain that was edited, deleted,
  re-linked or wrongly signed (:class:`ChainProblem`).
- :class:`PlanRecorder`: the control plane's own signed chain of compile-time plans.
- :func:`replay`: what a candidate policy would decide differently, with cost deltas.

Every error derives from :class:`AuditError`.
"""

from __future__ import annotations

from tiermesh.controlplane.audit.chain import ChainProblem, KeyLookup, signature_valid, verify_chain
from tiermesh.controlplane.audit.collector import (
    AuditCollector,
    AuditCollectorServer,
    Signer,
    start_audit_collector,
)
from tiermesh.controlplane.audit.errors import (
    AuditError,
    AuditStoreError,
    ForeignRecord,
    NodeNotAuthenticated,
    PlanBodyMismatch,
    RecordRejected,
    UndecodableShipment,
    status_for,
)
from tiermesh.controlplane.audit.facets import Facets, facets
from tiermesh.controlplane.audit.merge import MergeReport, merge_stores
from tiermesh.controlplane.audit.plans import (
    DEFAULT_MAX_PLAN_BYTES,
    PLAN_RECORD_PATH,
    PlanRecorder,
    body_digest,
    plan_digest,
    recorded_plan,
)
from tiermesh.controlplane.audit.replay import (
    Evaluate,
    ReplayChange,
    ReplayReport,
    TenantSummary,
    decision_cost,
    input_price,
    rego_path,
    replay,
    token_estimate,
)
from tiermesh.controlplane.audit.store import (
    DEFAULT_DB_NAME,
    AuditQuery,
    AuditStore,
    StoredRecord,
)
from tiermesh.controlplane.audit.verify_store import (
    StoreVerification,
    signer_keys,
    verify_store,
)

__all__ = [
    "DEFAULT_DB_NAME",
    "DEFAULT_MAX_PLAN_BYTES",
    "PLAN_RECORD_PATH",
    "AuditCollector",
    "AuditCollectorServer",
    "AuditError",
    "AuditQuery",
    "AuditStore",
    "AuditStoreError",
    "ChainProblem",
    "Evaluate",
    "Facets",
    "ForeignRecord",
    "KeyLookup",
    "MergeReport",
    "NodeNotAuthenticated",
    "PlanBodyMismatch",
    "PlanRecorder",
    "RecordRejected",
    "ReplayChange",
    "ReplayReport",
    "Signer",
    "StoreVerification",
    "StoredRecord",
    "TenantSummary",
    "UndecodableShipment",
    "body_digest",
    "decision_cost",
    "facets",
    "input_price",
    "merge_stores",
    "plan_digest",
    "recorded_plan",
    "rego_path",
    "replay",
    "signature_valid",
    "signer_keys",
    "start_audit_collector",
    "status_for",
    "token_estimate",
    "verify_chain",
    "verify_store",
]
