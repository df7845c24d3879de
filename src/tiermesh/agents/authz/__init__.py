"""Per-request policy on the node: Envoy's ext_authz server with PII detection.

- :mod:`.detectors` — pluggable PII detectors (:class:`Detector`, :class:`DetectorRegistry`);
  findings carry kind, count and spans, never the matched text.
- :func:`estimate_tokens` — a chars/4 token estimate (an estimate, not a count).
- :class:`BudgetSource` — a tenant's budget state (:class:`StaticBudgetSource`,
  :class:`JsonFileBudgetSource` until the control plane provides one).
- :class:`DecisionSink` — where decisions go before an answer (:class:`DecisionLogSink`
  on the durable decision log; :class:`MemorySink` for tests).
- :class:`Authorizer` — inspect, estimate, ask the budget, evaluate
  ``data.tiermesh.request.decision``, record, answer (:class:`Verdict`).
- :class:`KeyTable` — who a request is: its tenant API key (:mod:`.credentials`) or a JWT
  Envoy's ``jwt_authn`` verified against a catalog issuer (:class:`JwtTrust`,
  :mod:`.jwt_claims`).
- :class:`DecisionCache` — the request policy's answers memoized on the input parts it
  provably reads (:func:`input_references`).
- :func:`build_request_engine` — a new engine with a request policy that loaded and
  answered :func:`probe_policy`; :meth:`Authorizer.use_policy` swaps it in.
- :func:`start_authz_server` — ``envoy.service.auth.v3.Authorization/Check`` on grpc.aio.

Every error derives from :class:`AuthzError`.
"""

from __future__ import annotations

from tiermesh.agents.authz.body import BodyEncoding, InspectedBody, inspect_body
from tiermesh.agents.authz.budget import (
    BudgetSource,
    BudgetState,
    JsonFileBudgetSource,
    StaticBudgetSource,
)
from tiermesh.agents.authz.credentials import (
    CREDENTIAL_HEADERS,
    Authenticated,
    KeyTable,
    Refused,
    key_table,
)
from tiermesh.agents.authz.decide import (
    DECISION_ID_HEADER,
    DEFAULT_MAX_BODY_BYTES,
    OWNED_HEADERS,
    RECORD_PATH,
    REQUEST_DECISION_PATH,
    REQUEST_INPUT_VERSION,
    Authorizer,
    CheckInput,
    Outcome,
    Verdict,
    build_input,
    probe_policy,
)
from tiermesh.agents.authz.decision_cache import DecisionCache, input_references
from tiermesh.agents.authz.detectors import (
    DEFAULT_DETECTORS,
    Detector,
    DetectorRegistry,
    Finding,
    default_registry,
    detect,
)
from tiermesh.agents.authz.errors import (
    AuthzError,
    BudgetUnavailable,
    DecisionNotRecorded,
    PolicyRejected,
)
from tiermesh.agents.authz.jwt_claims import JwtTrust
from tiermesh.agents.authz.normalize import detection_text
from tiermesh.agents.authz.policy import (
    build_request_engine,
    load_request_policy,
    request_policy_modules,
)
from tiermesh.agents.authz.server import (
    AuthorizationService,
    max_message_bytes,
    start_authz_server,
    to_check_input,
    to_check_response,
)
from tiermesh.agents.authz.sink import DecisionLogSink, DecisionSink, MemorySink
from tiermesh.agents.authz.tokens import CHARS_PER_TOKEN, estimate_tokens

__all__ = [
    "CHARS_PER_TOKEN",
    "CREDENTIAL_HEADERS",
    "DECISION_ID_HEADER",
    "DEFAULT_DETECTORS",
    "DEFAULT_MAX_BODY_BYTES",
    "OWNED_HEADERS",
    "RECORD_PATH",
    "REQUEST_DECISION_PATH",
    "REQUEST_INPUT_VERSION",
    "Authenticated",
    "AuthorizationService",
    "Authorizer",
    "AuthzError",
    "BodyEncoding",
    "BudgetSource",
    "BudgetState",
    "BudgetUnavailable",
    "CheckInput",
    "DecisionCache",
    "DecisionLogSink",
    "DecisionNotRecorded",
    "DecisionSink",
    "Detector",
    "DetectorRegistry",
    "Finding",
    "InspectedBody",
    "JsonFileBudgetSource",
    "JwtTrust",
    "KeyTable",
    "MemorySink",
    "Outcome",
    "PolicyRejected",
    "Refused",
    "StaticBudgetSource",
    "Verdict",
    "build_input",
    "build_request_engine",
    "default_registry",
    "detect",
    "detection_text",
    "estimate_tokens",
    "input_references",
    "inspect_body",
    "key_table",
    "load_request_policy",
    "max_message_bytes",
    "probe_policy",
    "request_policy_modules",
    "start_authz_server",
    "to_check_input",
    "to_check_response",
]
