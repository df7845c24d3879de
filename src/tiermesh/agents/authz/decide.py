"""The request-time decision, independent of the wire: :class:`Authorizer`.

For one :class:`CheckInput` it inspects the body, asks the :class:`BudgetSource`, builds
the policy input (:data:`REQUEST_INPUT_VERSION`, see ``policies/schemas/
request_input.schema.json``), evaluates :data:`REQUEST_DECISION_PATH`, appends the
decision to the :class:`DecisionSink` and only then returns a :class:`Verdict`.

The policy's answer must be ``{allow: bool, sensitivity: public|internal|restricted,
budget_exhausted: bool, reason: str, headers: {name: value}}``. Anything else — an
undefined document, an evaluation error, a malformed object — is recorded as an ``error``
outcome and answered 503: the request is never routed on a guess.

**Sensitivity has a floor the policy cannot lower** (:mod:`.floor`): the detectors' findings
in the body, path, query and headers, a body not fully or not cleanly inspectable, and the
caller's own label are computed in code; the request is routed (``x-tiermesh-sensitivity``)
and recorded (``result.sensitivity``) with the higher of that floor and the policy's answer
— one value, whatever the policy put in its ``headers``. The record also keeps the policy's
own answer (``policy_answer``, what ``tiermesh audit replay`` compares a candidate
policy with) and the floor with its reasons.

The policy input holds no raw path or header value that could carry personal data: a
value with a finding, or outside the plain shape of a route label or API path, is
replaced by :data:`MASKED`.

Only headers named ``x-tiermesh-*`` with printable values are taken from the policy; the
headers the server owns (:data:`OWNED_HEADERS`) that the decision does not set are removed
from the request, so a caller cannot pre-set them.

**The tenant is who the credential says** (:mod:`.credentials`): with a valid tenant API
key, or a JWT Envoy verified against a catalog issuer (:mod:`.jwt_claims`), the request is
decided, recorded (``input.credential``: the key's id, or the JWT's issuer and subject,
never the key or token) and routed as the credential's tenant — ``x-tiermesh-tenant`` is
overwritten, whatever the caller sent — and the credential headers (``authorization``,
``x-api-key``) are removed before the request goes upstream (a cloud route then gets only
the provider's key). A missing credential where one is required, or a malformed, unknown
or revoked key, or a JWT that is expired, not yet valid, wrongly signed, for another
audience or issuer, unsigned, malformed or naming an unknown tenant, is answered 401 with
the problem in a JSON body and recorded without asking the policy; nothing is routed. The
node's own re-entries (a cascade step the node's handler sends back through the app
listener, carrying the handler's secret: :meth:`Authorizer.trust_reentry`) are not
authenticated again: their ``x-tiermesh-tenant`` is the one the first decision set.

**Cascade steps are chosen here, not by a header match**: an allowed re-entry's verdict
carries its ``x-tiermesh-cascade-step`` as dynamic metadata
(:data:`~tiermesh.controlplane.api.CASCADE_STEP_METADATA`), which is what the compiled
per-step routes match on. A client's own step header sets nothing, so it can never pick a
step, and the secret itself appears in no route, registration or config dump.

**Requests from other nodes** (``CheckInput.hop == "mesh"``, set only from the mesh
listener's own configuration) are decided by the rules of :mod:`.mesh_hop`: the caller is
the peer node (``input.peer``), the tenant the sending node set, no tenant key; floor,
policy and record as on any request.

The policy can be replaced while requests are decided (:meth:`Authorizer.use_policy`); a
new one should first pass :func:`probe_policy`.

**Answers are memoized** (:mod:`.decision_cache`) when the caller gives the policy's
modules with its engine and they provably read ``input`` only through dotted references
and call no impure builtin: a request whose input document has the same values at every
reference the policy reads gets the answer the engine gave the first such request,
without evaluating. The cache belongs to the engine (a new policy or catalog is a new
engine, :meth:`Authorizer.use_policy`, with an empty cache); a budget crossing changes
``input.budget`` and so the key. Errors are never cached. Everything else (floor,
record, headers) is computed per request as before.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias

from tiermesh.agents.authz import normalize
from tiermesh.agents.authz.body import InspectedBody, inspect_body
from tiermesh.agents.authz.budget import UNKNOWN, BudgetSource, BudgetState
from tiermesh.agents.authz.credentials import (
    CREDENTIAL_HEADERS,
    NO_KEYS,
    Authenticated,
    KeyTable,
    Refused,
)
from tiermesh.agents.authz.decision_cache import DEFAULT_CAPACITY, DecisionCache, input_references
from tiermesh.agents.authz.detectors import DetectorRegistry
from tiermesh.agents.authz.errors import AuthzError, DecisionNotRecorded, PolicyRejected
from tiermesh.agents.authz.floor import (
    DEFAULT_UNINSPECTED_HEADERS,
    Floor,
    RequestFinding,
    effective_level,
    inspect_request,
    sensitivity_floor,
)
from tiermesh.agents.authz.mesh_hop import (
    peer_document,
    peer_problem,
    probe_decision,
    probe_problem,
    without_credentials,
)
from tiermesh.agents.authz.sink import DecisionSink
from tiermesh.agents.decisionlog import DecisionEntry
from tiermesh.controlplane.api import CASCADE_STEP_HEADER, CASCADE_STEP_METADATA, MATCH_HEADERS
from tiermesh.controlplane.api.request_policy import REQUEST_DECISION_PATH, is_request_decision
from tiermesh.rego import UNDEFINED, PolicyEngine, PolicyError

__all__ = [
    "BUDGET_HEADER",
    "DECISION_ID_HEADER",
    "DEFAULT_MAX_BODY_BYTES",
    "MASKED",
    "OWNED_HEADERS",
    "PARTIAL_BODY_HEADER",
    "RECORD_PATH",
    "REQUEST_DECISION_PATH",
    "REQUEST_INPUT_VERSION",
    "Authorizer",
    "CheckInput",
    "Outcome",
    "Verdict",
    "build_input",
    "probe_policy",
]

log = logging.getLogger("tiermesh.agents.authz")

RECORD_PATH: Final = "tiermesh/request/decision"
"""``path`` of the decision records (OPA's decision-log spelling of the document)."""
REQUEST_INPUT_VERSION: Final = "v1"
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
"""Bytes of a body inspected by default (Envoy's ``with_request_body.max_request_bytes``)."""
DECISION_ID_HEADER: Final = "x-tiermesh-decision-id"
"""Request and response header carrying the decision's id."""
BUDGET_HEADER: Final = "x-tiermesh-budget"
OWNED_HEADERS: Final = (MATCH_HEADERS["sensitivity"], BUDGET_HEADER, DECISION_ID_HEADER)
"""Request headers only the authz server may set."""
PARTIAL_BODY_HEADER: Final = "x-envoy-auth-partial-body"
"""Header Envoy adds to the check request when it sent only part of the body."""

_ROUTING_HEADERS: Final = {"sensitivity", "task", "model"}
_MAX_HEADER_VALUE: Final = 256
MASKED: Final = "[masked]"
"""What the policy input (and so the decision log) holds instead of a path or header value
that may carry personal data."""
_PLAIN_VALUE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PLAIN_PATH: Final = re.compile(r"/[A-Za-z0-9._/-]{0,255}")
_PLAIN_CONTENT_TYPE: Final = re.compile(r"[A-Za-z0-9._+/=; -]{1,128}")
_STEP_INDEX: Final = re.compile(r"[0-9]{1,2}")

Outcome: TypeAlias = Literal["allow", "deny", "error"]
_UNAUTHENTICATED: Final = 401


@dataclass(frozen=True, slots=True)
class CheckInput:
    """One request as the authz server sees it: lowercase header names, the body bytes
    Envoy sent, whether Envoy cut them (``partial``), and what Envoy's ``jwt_authn`` filter
    left in the request's metadata (``jwt_metadata``, see :mod:`.jwt_claims`)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""
    partial: bool = False
    hop: Literal["app", "mesh"] = "app"
    """``mesh``: the check came from the node-to-node inbound listener (its configuration
    says so, never the client); see :mod:`.mesh_hop`."""
    peer: str = ""
    """The verified client certificate's URI SAN (Envoy's source principal) of a mesh hop."""
    probe: bool = False
    """A mesh hop on a probe route (a peer's health check); ignored on the app listener."""
    jwt_metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to answer: ``status`` 200 (allow), 401 (no valid tenant key), 403 (policy
    denial) or 503 (no decision)."""

    decision_id: uuid.UUID
    outcome: Outcome
    status: int
    decision: dict[str, Any]
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    """Dynamic metadata for the routes (namespace ``CASCADE_STEP_METADATA[0]``); only on
    an allowed verdict."""
    floor: Floor | None = None
    """The sensitivity floor computed in code (for the node's metrics)."""
    declared: str | None = None
    """The caller's own ``x-tiermesh-sensitivity`` (None: it sent none)."""
    findings: tuple[tuple[str, str, int], ...] = ()
    """Personal data found: (kind, where: ``body``/``path``/``query``/``header``, count)."""

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"

    def denial_body(self) -> bytes:
        """The JSON body of a denied answer: error, reason and decision id (no input)."""
        error = "request denied" if self.outcome == "deny" else "no decision"
        return json.dumps(
            {
                "error": "unauthenticated" if self.status == _UNAUTHENTICATED else error,
                "reason": self.decision.get("reason", ""),
                "decision_id": str(self.decision_id),
            }
        ).encode()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value[:_MAX_HEADER_VALUE] if value else None


def _declared_length(headers: Mapping[str, str]) -> int | None:
    raw = headers.get("content-length", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


def _plain(value: str, shape: re.Pattern[str], where: str, found: set[str]) -> str:
    """``value`` when it has the plain ``shape`` and no finding was made ``where``."""
    return value if where not in found and shape.fullmatch(value) else MASKED


def build_input(
    request: CheckInput,
    body: InspectedBody,
    budget: BudgetState,
    declared: int | None,
    *,
    request_findings: tuple[RequestFinding, ...] = (),
    floor: Floor | None = None,
) -> dict[str, Any]:
    """The policy input for ``request`` (no body text, no other headers; values that may
    carry personal data masked)."""
    found = {f.where for f in request_findings}
    routing = {
        name: _plain(value, _PLAIN_VALUE, f"header x-tiermesh-{name}", found)
        for name in sorted(_ROUTING_HEADERS | {"budget"})
        if (value := _header(request.headers, f"x-tiermesh-{name}")) is not None
    }
    payload: dict[str, Any] = {
        "sha256": body.sha256,
        "received_bytes": body.received_bytes,
        "inspected_bytes": body.inspected_bytes,
        "truncated": body.truncated,
        "encoding": body.encoding,
        "json": body.json,
    }
    if declared is not None:
        payload["declared_bytes"] = declared
    path = request.path.split("?", 1)[0]
    http: dict[str, Any] = {
        "method": _plain(request.method, _PLAIN_VALUE, "method", found),
        "path": _plain(path, _PLAIN_PATH, "path", found),
    }
    if content_type := _header(request.headers, "content-type"):
        http["content_type"] = _plain(
            content_type, _PLAIN_CONTENT_TYPE, "header content-type", found
        )
    document: dict[str, Any] = {
        "version": REQUEST_INPUT_VERSION,
        "headers": routing,
        "request": http,
        "payload": payload,
        "findings": [f.to_json() for f in body.findings],
        "token_estimate": body.token_estimate,
        "budget": budget.to_json(),
    }
    if request_findings:
        document["request_findings"] = [f.to_json() for f in request_findings]
    if body.uninspectable:
        payload["uninspectable"] = body.uninspectable
    if floor is not None:
        document["floor"] = floor.to_json()
    if (tenant := _header(request.headers, MATCH_HEADERS["tenant"])) is not None:
        document["tenant"] = _plain(
            tenant, _PLAIN_VALUE, f"header {MATCH_HEADERS['tenant']}", found
        )
    return document


def _valid_decision(value: object) -> dict[str, Any] | None:
    return value if is_request_decision(value) else None


def _safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower().startswith("x-tiermesh-")
        and name.lower() != DECISION_ID_HEADER
        and value.isprintable()
        and len(value) <= _MAX_HEADER_VALUE
    }


@dataclass(frozen=True, slots=True)
class _Policy:
    engine: PolicyEngine
    bundle_revision: str | None
    etcd_revision: int | None
    keys: KeyTable = NO_KEYS
    cache: DecisionCache | None = None


def _cache_for(modules: Mapping[str, str] | None, capacity: int) -> DecisionCache | None:
    """A cache for an engine holding ``modules`` (None: not given, or not provably pure)."""
    if modules is None or capacity <= 0:
        return None
    references = input_references(modules)
    if references is None:
        log.info("request policy answers are not cached: the policy reads input whole or "
                 "calls an impure builtin")  # fmt: skip
        return None
    return DecisionCache(references, capacity)


_PROBE = CheckInput(
    method="POST",
    path="/v1/chat/completions",
    headers={"content-type": "application/json", "x-tiermesh-sensitivity": "public"},
    body=b'{"messages": [{"role": "user", "content": "hello"}]}',
)


def probe_policy(engine: PolicyEngine) -> None:
    """Check that ``engine`` answers a plain request with a valid decision object (allow or
    deny both pass): what a policy must do before it replaces a serving one.

    Raises:
        PolicyRejected: the evaluation failed, or its answer is undefined or malformed.
    """
    body = inspect_body(_PROBE.body, max_bytes=DEFAULT_MAX_BODY_BYTES)
    document = build_input(_PROBE, body, UNKNOWN, None)
    try:
        value = engine.evaluate(REQUEST_DECISION_PATH, document)
    except PolicyError as exc:
        raise PolicyRejected(f"the probe decision failed: {exc}") from exc
    if value is UNDEFINED:
        raise PolicyRejected(f"{REQUEST_DECISION_PATH} is undefined for a plain request")
    if _valid_decision(value) is None:
        raise PolicyRejected(f"{REQUEST_DECISION_PATH} is not a valid decision object")


class Authorizer:
    """Decides requests with one loaded :class:`PolicyEngine` and records every decision.

    Task safety: call :meth:`decide` and :meth:`use_policy` from one event loop (the sink's
    and budget source's); the engine is evaluated on that loop's thread (regorus keeps
    per-thread engines). Does not own the engines, sink or budget source.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        sink: DecisionSink,
        budget: BudgetSource,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        registry: DetectorRegistry | None = None,
        bundle_revision: str | None = None,
        etcd_revision: int | None = None,
        snapshot_version: str | None = None,
        uninspected_headers: Collection[str] = DEFAULT_UNINSPECTED_HEADERS,
        keys: KeyTable = NO_KEYS,
        modules: Mapping[str, str] | None = None,
        cache_capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        """``modules``: the Rego ``engine`` holds; given, its answers are memoized (see the
        module docstring; ``cache_capacity`` 0 turns that off)."""
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0")
        self._cache_capacity = cache_capacity
        self._policy = _Policy(
            engine, bundle_revision, etcd_revision, keys, _cache_for(modules, cache_capacity)
        )
        self._sink = sink
        self._budget = budget
        self._max_body = max_body_bytes
        self._registry = registry
        self._uninspected = frozenset(name.lower() for name in uninspected_headers)
        normalize.warm()
        self.snapshot_version = snapshot_version
        self._reentry: tuple[str, bytes] | None = None

    def trust_reentry(self, header: str, secret: str) -> None:
        """Requests whose ``header`` holds ``secret`` (compared in constant time) come from
        this node itself (the cascade handler's step requests, whose first pass through
        here authenticated the caller and set ``x-tiermesh-tenant``): they are decided
        on that header, without a tenant key. ``secret`` must be random and node-local."""
        self._reentry = (header.lower(), secret.encode())

    def _reentered(self, headers: Mapping[str, str]) -> bool:
        if self._reentry is None:
            return False
        header, secret = self._reentry
        sent = headers.get(header)
        return sent is not None and hmac.compare_digest(sent.encode(), secret)

    @property
    def max_body_bytes(self) -> int:
        return self._max_body

    @property
    def bundle_revision(self) -> str | None:
        """The revision later decisions are stamped with."""
        return self._policy.bundle_revision

    @property
    def etcd_revision(self) -> int | None:
        """The store revision of the bundle later decisions are stamped with (None: a
        policy read from local files)."""
        return self._policy.etcd_revision

    @property
    def keys(self) -> KeyTable:
        """The tenant keys later requests are authenticated with."""
        return self._policy.keys

    def use_policy(
        self,
        engine: PolicyEngine,
        *,
        bundle_revision: str | None,
        etcd_revision: int | None = None,
        keys: KeyTable = NO_KEYS,
        modules: Mapping[str, str] | None = None,
    ) -> PolicyEngine:
        """Decide later requests with ``engine``, stamped with ``bundle_revision`` and
        ``etcd_revision``, authenticating them with ``keys``; returns the engine it
        replaces (the caller may close it now: a decision takes its engine and stamps
        together, then evaluates without awaiting, so none is left using the old one).
        ``modules`` (the Rego ``engine`` holds) turns on a new, empty answer cache; the
        previous one is dropped in any case. Does not check ``engine``: see
        :func:`probe_policy`."""
        previous = self._policy.engine
        cache = _cache_for(modules, self._cache_capacity)
        self._policy = _Policy(engine, bundle_revision, etcd_revision, keys, cache)
        return previous

    @property
    def cache(self) -> DecisionCache | None:
        """The current policy's answer cache (None: answers are not memoized)."""
        return self._policy.cache

    def _credential(
        self, request: CheckInput, mesh: bool, tenant: str | None
    ) -> tuple[CheckInput, Authenticated | Refused | None, bool]:
        """``request`` as it is decided, its tenant key's verdict (None: none checked) and
        whether it re-entered from the cascade handler. A key is neither inspected nor
        forwarded; the tenant is the key's."""
        if mesh:  # the sending node authenticated the app; no tenant key crosses the mesh
            request = replace(request, headers=without_credentials(request.headers))
        elif tenant is not None:  # a part of a request this node admitted (a batch line)
            headers = {**without_credentials(request.headers), MATCH_HEADERS["tenant"]: tenant}
            request = replace(request, headers=headers)
        reentered = not mesh and tenant is None and self._reentered(request.headers)
        unchecked = mesh or reentered or tenant is not None
        credential = (
            None
            if unchecked
            else self._policy.keys.authenticate(request.headers, request.jwt_metadata)
        )
        if credential is not None:
            headers = {k: v for k, v in request.headers.items() if k not in CREDENTIAL_HEADERS}
            if isinstance(credential, Authenticated):
                headers[MATCH_HEADERS["tenant"]] = credential.tenant
            request = replace(request, headers=headers)
        return request, credential, reentered

    async def decide(self, request: CheckInput, *, tenant: str | None = None) -> Verdict:
        """Decide ``request`` and return once the decision is durable.

        ``tenant``: the request is a part of one this node already authenticated (a batch
        job's line, submitted through the app listener): it is decided as that tenant,
        without a key, whatever its headers say. Only node-local callers pass it.

        Raises:
            DecisionNotRecorded: the sink failed; the request must not be answered.
        """
        started = time.perf_counter_ns()
        decision_id = uuid.uuid4()
        mesh = request.hop == "mesh"
        request, credential, reentered = self._credential(request, mesh, tenant)
        declared = _declared_length(request.headers)
        body = inspect_body(
            request.body,
            max_bytes=self._max_body,
            declared_length=declared,
            partial=request.partial,
            registry=self._registry,
        )
        found = inspect_request(
            request.path, request.headers, registry=self._registry, uninspected=self._uninspected
        )
        floor = sensitivity_floor(
            request.headers.get(MATCH_HEADERS["sensitivity"]),
            body,
            found,
            content_encoding=request.headers.get("content-encoding"),
        )
        inspected = time.perf_counter_ns()
        refused = credential if isinstance(credential, Refused) else None
        tenant = request.headers.get(MATCH_HEADERS["tenant"])
        budget = UNKNOWN if refused else await self._budget_state(tenant)
        document = build_input(request, body, budget, declared, request_findings=found, floor=floor)
        if credential is not None and (presented := credential.to_json()) is not None:
            document["credential"] = presented
        # Refused without asking the policy: a bad tenant key, or a mesh hop with no peer.
        denial = refused.problem if refused else _peer(request, document) if mesh else None
        evaluating = time.perf_counter_ns()
        policy = self._policy
        if denial is None:
            outcome, answer = self._answer(policy, document, probe=mesh and request.probe)
        else:
            outcome, answer = "deny", _unauthenticated_decision(denial, floor)
        finished = time.perf_counter_ns()
        decision = _with_floor(answer, floor)
        status = _UNAUTHENTICATED if refused else {"allow": 200, "deny": 403, "error": 503}[outcome]
        entry = DecisionEntry(
            path=RECORD_PATH,
            input=document,
            result={
                **decision,
                "policy_answer": None if denial or (mesh and request.probe) else answer,
                "floor": floor.to_json(),
                "outcome": outcome,
                "status": status,
            },
            kind="request",
            timers={
                "timer_tiermesh_inspect_ns": inspected - started,
                "timer_rego_query_eval_ns": finished - evaluating,
                "timer_server_handler_ns": finished - started,
            },
            bundle_revision=policy.bundle_revision,
            etcd_revision=policy.etcd_revision,
            snapshot_version=self.snapshot_version,
            decision_id=decision_id,
        )
        try:
            await self._sink.record(entry)
        except Exception as exc:
            raise DecisionNotRecorded(str(decision_id), f"{type(exc).__name__}: {exc}") from exc
        set_headers = _safe_headers(decision.get("headers", {})) if outcome == "allow" else {}
        if outcome == "allow":
            set_headers[MATCH_HEADERS["sensitivity"]] = decision["sensitivity"]
            if isinstance(credential, Authenticated):
                set_headers[MATCH_HEADERS["tenant"]] = credential.tenant
        set_headers[DECISION_ID_HEADER] = str(decision_id)
        removed = tuple(h for h in OWNED_HEADERS if h not in set_headers)
        if mesh or isinstance(credential, Authenticated):
            removed += CREDENTIAL_HEADERS
        step = request.headers.get(CASCADE_STEP_HEADER, "")
        metadata = (
            {CASCADE_STEP_METADATA[1]: step}
            if outcome == "allow" and reentered and _STEP_INDEX.fullmatch(step)
            else {}
        )
        return Verdict(
            decision_id=decision_id,
            outcome=outcome,
            status=status,
            decision=decision,
            set_headers=set_headers,
            remove_headers=removed,
            metadata=metadata,
            floor=floor,
            declared=request.headers.get(MATCH_HEADERS["sensitivity"]),
            findings=(
                *((f.kind, "body", f.count) for f in body.findings),
                *((f.kind, f.where.split(" ", 1)[0], f.count) for f in found),
            ),
        )

    async def _budget_state(self, tenant: str | None) -> BudgetState:
        if not tenant:
            return UNKNOWN
        try:
            return await self._budget.state(tenant)
        except AuthzError as exc:
            log.warning("budget unknown for this request: %s", exc)
            return UNKNOWN

    def _answer(
        self, policy: _Policy, document: dict[str, Any], *, probe: bool
    ) -> tuple[Outcome, dict[str, Any]]:
        """The policy's answer, from the cache when it holds one for ``document``; a mesh
        peer's health probe is answered in code (:mod:`.mesh_hop`)."""
        if probe:
            return "allow", probe_decision()
        cache = policy.cache
        if cache is None:
            return self._evaluate(policy.engine, document)
        try:
            key = cache.key(document)
        except (TypeError, ValueError):  # not JSON: let the engine say what it makes of it
            return self._evaluate(policy.engine, document)
        cached: tuple[Outcome, dict[str, Any]] | None = cache.get(key)
        if cached is not None:
            return cached
        answer = self._evaluate(policy.engine, document)
        if answer[0] != "error":
            cache.put(key, answer)
        return answer

    def _evaluate(
        self, engine: PolicyEngine, document: dict[str, Any]
    ) -> tuple[Outcome, dict[str, Any]]:
        try:
            value = engine.evaluate(REQUEST_DECISION_PATH, document)
        except PolicyError as exc:
            log.error("request policy failed: %s", exc)
            return "error", _error_decision(f"policy error: {exc}")
        decision = None if value is UNDEFINED else _valid_decision(value)
        if decision is None:
            what = "undefined" if value is UNDEFINED else "not a valid decision object"
            log.error("request policy answer is %s", what)
            return "error", _error_decision(f"policy answer is {what}")
        return ("allow" if decision["allow"] else "deny"), decision


def _peer(request: CheckInput, document: dict[str, Any]) -> str | None:
    """Put the mesh hop's ``input.peer`` into ``document``; why the peer is unusable, or
    None (:mod:`.mesh_hop`)."""
    document["peer"] = peer_document(request.peer, request.headers, DECISION_ID_HEADER)
    if request.probe:
        document["peer"]["probe"] = True
    return peer_problem(request.peer) or (probe_problem(request) if request.probe else None)


def _with_floor(answer: dict[str, Any], floor: Floor) -> dict[str, Any]:
    """``answer`` with its sensitivity raised to ``floor`` and its headers carrying that one
    label (whatever case the policy spelled the header in); the reason says so when the
    floor raised it."""
    level = effective_level(floor, answer["sensitivity"])
    sensitivity = MATCH_HEADERS["sensitivity"]
    headers = {k: v for k, v in answer["headers"].items() if k.lower() != sensitivity}
    decision = {**answer, "sensitivity": level, "headers": {**headers, sensitivity: level}}
    if level != answer["sensitivity"]:
        reasons = "; ".join(floor.reasons) or "as declared"
        decision["reason"] = f"{answer['reason']}; raised to {level} by inspection ({reasons})"
    return decision


def _unauthenticated_decision(problem: str, floor: Floor) -> dict[str, Any]:
    """What a request without a valid tenant key is recorded with: the policy is not
    asked, the floor still labels what it carried, the reason is the problem alone (what
    the 401 body says)."""
    return {
        "allow": False,
        "sensitivity": effective_level(floor, "public"),
        "budget_exhausted": False,
        "reason": problem,
        "headers": {},
    }


def _error_decision(reason: str) -> dict[str, Any]:
    return {
        "allow": False,
        "sensitivity": "restricted",
        "budget_exhausted": False,
        "reason": reason,
        "headers": {},
    }
