"""GenAI and tiermesh answer metrics from Envoy's access-log entries.

Every request the node's app listener finishes reaches the agent's usage server as one
``HTTPAccessLogEntry`` (:mod:`tiermesh.agents.usage.server`); :meth:`EdgeMetrics.observe`
turns it into observations. Nothing is added to the request path: Envoy measures, the
agent counts after the answer is sent.

What an entry is (:func:`read_entry`):

- **GenAI operation**: a request whose path ends in ``/chat/completions`` (``chat``),
  ``/completions`` (``text_completion``), ``/embeddings`` (``embeddings``) or
  ``/responses`` (``chat``). Other paths count only in the edge request counter.
- **Cascade step**: a request the node's cascade handler sent back through the listener
  (route ``<route>/cascade/<i>``): counted in ``tiermesh_cascade_steps_total`` only; the
  client's request is the cascade route's entry, which counts as the answer.
- **Answered**: Envoy's ``response_code_details`` is ``via_upstream`` (the status came
  from a backend). Local replies (ext_authz's 401/403/503, 404, 429, a route's 503,
  Envoy's own 503 when no attempt reached a backend) are not.

GenAI histograms (OpenTelemetry GenAI semantic conventions; names in :mod:`.names`), with
attributes ``gen_ai.operation.name``, ``gen_ai.provider.name`` (the answering backend as
the catalog names it), ``gen_ai.request.model`` (the request body's ``model``, read by
the usage filter, else ``x-tiermesh-model``), ``gen_ai.response.model`` (the answer's
``model``), ``error.type`` (the status code when not 2xx/3xx, else empty) and tiermesh's
``tier``, ``backend``, ``tenant``, ``route``. The edge is the client of the model server,
so both sides are measured here from Envoy's timestamps:

- ``gen_ai.client.operation.duration``: first request byte in → last answer byte out,
  for every GenAI request (local replies too, with ``error.type``).
- ``gen_ai.client.operation.time_to_first_chunk``: → first answer byte out, streamed
  answers (``text/event-stream``) only.
- ``gen_ai.client.operation.time_per_output_chunk``: (last - first answer byte out) ÷
  (output tokens - 1), streamed answers with at least two output tokens: an
  OpenAI-compatible stream sends one chunk per token, and the access log has no chunk
  count, so this is the mean gap of one answer, not each gap.
- ``gen_ai.server.request.duration``: first byte sent to the answering upstream → its
  last byte received (earlier, failed attempts excluded).
- ``gen_ai.server.time_to_first_token``: first byte sent upstream → first byte back.
- ``gen_ai.server.time_per_output_token``: (last - first byte back) ÷ (output tokens - 1).
- ``gen_ai.client.token.usage``: input and output tokens (``gen_ai.token.type``), as the
  answer's ``usage`` reports them; an answer without usage records nothing here (its
  estimate is charged, not measured).

Server-side histograms, the token histogram and ``time_per_*`` need an answered entry;
the cascade route's entry gets client-side ones only (its upstream is the handler).

tiermesh figures (Prometheus names in :data:`EDGE_METRICS`):

- ``tiermesh_edge_requests_total{route, code, answered}``: every entry.
- ``tiermesh_answers_total{tier, backend, route, tenant, position, reason}``: answered
  GenAI entries. ``position`` is ``first`` when the backend is the route's first chain
  step, else ``fallback``; ``reason`` says why: ``budget`` (the tenant is past its
  budget: ext_authz marked the request ``x-tiermesh-budget: exhausted``, or the route's
  budget variant answered; once the control plane re-plans the tenant its chain starts
  with the budget fallback, which still counts as a fallback), ``cascade`` (the cascade
  asked more than one step),
  ``first_byte_deadline`` (an earlier attempt used up the first step's first-byte
  deadline), ``upstream_error`` (an earlier attempt failed sooner: 5xx, reset, refused
  connection), ``unavailable`` (one attempt, yet not the first step: it was ejected,
  unhealthy or its circuit breaker was full; Envoy's own counters, re-exposed, say which),
  ``none`` for a first-choice answer. The reasons are those of the answer counts the node
  reports to the control plane (:mod:`tiermesh.agents.usage.answers`), with its
  ``retry`` told apart into ``first_byte_deadline`` and ``upstream_error``.
- ``tiermesh_fail_closed_total{route, cause}``: a 503 local reply to a restricted (or
  unlabelled) request: ``no_healthy_upstream`` (every permitted backend ejected or
  unhealthy), ``unreachable`` (attempts failed: connection refused or reset, timeouts),
  ``authz`` (ext_authz had no decision), ``refused`` (a route with no permitted backend,
  or a node without ext_authz).
- ``tiermesh_overhead_seconds{route}``: first request byte in → first byte sent to the
  answering upstream (ext_authz, filters, connection, earlier attempts), the figure the
  ``x-tiermesh-overhead-ms`` header reports.
- ``tiermesh_cascade_steps_total{route, step, tier, backend, code}``.

Label values a client can choose are bounded: models to :data:`MAX_MODELS` distinct
values each, tenants to :data:`MAX_TENANTS` (a request ext_authz refused has tenant ``""``:
its tenant header is only the client's claim), then ``other``.

Thread safety: :meth:`EdgeMetrics.observe` may be called from any thread
(prometheus-client's metrics are thread-safe; the model bounds take a lock).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import duration_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram

from tiermesh.agents.metrics import names
from tiermesh.controlplane.api.telemetry import (
    FIRST_BACKEND_TAG,
    FIRST_BYTE_MS_TAG,
    RESPONSE_MODEL_KEY,
)

__all__ = [
    "EDGE_METRICS",
    "GENAI_LABELS",
    "MAX_MODELS",
    "MAX_TENANTS",
    "EdgeMetrics",
    "EntryFacts",
    "read_entry",
]

MAX_MODELS: Final = 64
"""Distinct model label values kept per attribute; later ones are ``other``."""
MAX_TENANTS: Final = 1024
"""Distinct tenant label values kept; later ones are ``other``."""

TENANT_HEADER: Final = "x-tiermesh-tenant"
SENSITIVITY_HEADER: Final = "x-tiermesh-sensitivity"
MODEL_HEADER: Final = "x-tiermesh-model"
BUDGET_HEADER: Final = "x-tiermesh-budget"
TIER_HEADER: Final = "x-tiermesh-tier"
STEPS_HEADER: Final = "x-tiermesh-cascade-steps"
BACKEND_TAG: Final = "tiermesh.backend"
TIER_TAG: Final = "tiermesh.tier"
USAGE_NAMESPACE: Final = "tiermesh.usage"

_OPERATIONS: Final = (
    ("/chat/completions", "chat"),
    ("/completions", "text_completion"),
    ("/embeddings", "embeddings"),
    ("/responses", "chat"),
)
_STEP_ROUTE: Final = re.compile(r"^(?P<route>.+)/cascade/(?P<step>[0-9]{1,2})$")

GENAI_LABELS: Final = (
    names.label(names.ATTR_OPERATION_NAME),
    names.label(names.ATTR_PROVIDER_NAME),
    names.label(names.ATTR_REQUEST_MODEL),
    names.label(names.ATTR_RESPONSE_MODEL),
    names.label(names.ATTR_ERROR_TYPE),
    "tier",
    "backend",
    "tenant",
    "route",
)
"""Labels of every GenAI histogram (the token histogram adds ``gen_ai_token_type``)."""

EDGE_METRICS: Final = (
    "tiermesh_edge_requests",
    "tiermesh_answers",
    "tiermesh_fail_closed",
    "tiermesh_overhead_seconds",
    "tiermesh_cascade_steps",
)
"""tiermesh's own metrics observed here (counters without their ``_total``)."""


@dataclass(frozen=True, slots=True)
class EntryFacts:
    """What one access-log entry says, in the terms the metrics use (module doc)."""

    route: str
    status: int
    answered: bool
    operation: str | None
    """The GenAI operation name, or None for another path."""
    tenant: str
    tier: str
    backend: str
    first_backend: str
    first_byte_s: float | None
    attempts: int
    request_model: str
    response_model: str
    sensitivity: str
    budget_exhausted: bool
    """ext_authz marked the tenant past its budget (``x-tiermesh-budget: exhausted``)."""
    stream: bool
    cascade_steps: int
    step: int | None
    """The cascade step index when the entry is a cascade step request."""
    input_tokens: int | None
    output_tokens: int | None
    no_healthy_upstream: bool
    unreachable: bool
    authz_denied: bool
    timings: dict[str, float]
    """Seconds from the first request byte, for each of Envoy's timestamps it set."""


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


_TIMINGS: Final = (
    "time_to_first_upstream_tx_byte",
    "time_to_first_upstream_rx_byte",
    "time_to_last_upstream_rx_byte",
    "time_to_first_downstream_tx_byte",
    "time_to_last_downstream_tx_byte",
)


def _operation(path: str) -> str | None:
    bare = path.split("?", 1)[0]
    for suffix, operation in _OPERATIONS:
        if bare.endswith(suffix):
            return operation
    return None


def read_entry(entry: accesslog_pb2.HTTPAccessLogEntry) -> EntryFacts:
    """The facts of one entry (module doc); never raises on a partial entry."""
    common = entry.common_properties
    request, response = entry.request, entry.response
    status = int(response.response_code.value)
    route = common.route_name
    tags = common.custom_tags
    usage = common.metadata.filter_metadata.get(USAGE_NAMESPACE)
    fields = usage.fields if usage is not None else {}
    prompt = fields.get("prompt_tokens")
    completion = fields.get("completion_tokens")
    model = fields.get(RESPONSE_MODEL_KEY)
    request_model = fields.get("request_model")
    step = _STEP_ROUTE.match(route)
    first_byte_ms = tags.get(FIRST_BYTE_MS_TAG, "")
    steps = response.response_headers.get(STEPS_HEADER, "")
    flags = common.response_flags
    return EntryFacts(
        route=route,
        status=status,
        answered=response.response_code_details == "via_upstream",
        operation=(_operation(request.path) if request.request_method == base_pb2.POST else None),
        tenant=request.request_headers.get(TENANT_HEADER, ""),
        tier=tags.get(TIER_TAG) or response.response_headers.get(TIER_HEADER, ""),
        backend=tags.get(BACKEND_TAG, ""),
        first_backend=tags.get(FIRST_BACKEND_TAG, ""),
        first_byte_s=int(first_byte_ms) / 1000 if first_byte_ms.isdigit() else None,
        attempts=int(common.upstream_request_attempt_count),
        request_model=(
            request_model.string_value
            if request_model is not None
            else request.request_headers.get(MODEL_HEADER, "")
        ),
        response_model=model.string_value if model is not None else "",
        sensitivity=request.request_headers.get(SENSITIVITY_HEADER, ""),
        budget_exhausted=request.request_headers.get(BUDGET_HEADER) == "exhausted",
        stream="event-stream" in response.response_headers.get("content-type", ""),
        cascade_steps=int(steps) if steps.isdigit() else 0,
        step=int(step.group("step")) if step else None,
        input_tokens=int(prompt.number_value) if prompt is not None else None,
        output_tokens=int(completion.number_value) if completion is not None else None,
        no_healthy_upstream=flags.no_healthy_upstream,
        unreachable=(
            flags.upstream_connection_failure
            or flags.upstream_retry_limit_exceeded
            or flags.upstream_remote_reset
            or flags.upstream_request_timeout
            or flags.upstream_connection_termination
            or flags.local_reset
        ),
        authz_denied=flags.HasField("unauthorized_details"),
        timings={
            name: _seconds(getattr(common, name)) for name in _TIMINGS if common.HasField(name)
        },
    )


def position(facts: EntryFacts) -> tuple[str, str]:
    """(``first`` | ``fallback``, reason) of an answered entry (module doc)."""
    if facts.budget_exhausted or facts.route.endswith("/budget") or "/budget/" in facts.route:
        return "fallback", "budget"
    if facts.cascade_steps:
        return ("fallback", "cascade") if facts.cascade_steps > 1 else ("first", "none")
    if not facts.first_backend or facts.backend == facts.first_backend:
        return "first", "none"
    if facts.attempts > 1:
        started = facts.timings.get("time_to_first_upstream_tx_byte", 0.0)
        deadline = facts.first_byte_s
        if deadline is not None and started >= deadline:
            return "fallback", "first_byte_deadline"
        return "fallback", "upstream_error"
    return "fallback", "unavailable"


class _Bounded:
    """At most ``limit`` distinct values pass; later new ones read ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = value[:128]
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self._limit:
                return "other"
            self._seen.add(value)
            return value


_CACHED_LABEL_SETS: Final = 4096
"""Label sets whose histogram children are kept (beyond: looked up each time)."""


@dataclass(frozen=True, slots=True)
class _GenAiChildren:
    client_duration: Histogram
    client_first_chunk: Histogram
    client_per_chunk: Histogram
    server_duration: Histogram
    server_first_token: Histogram
    server_per_token: Histogram
    input_tokens: Histogram
    output_tokens: Histogram


class EdgeMetrics:
    """The metrics of :mod:`this module <tiermesh.agents.metrics.edge>`, registered in
    ``registry`` (one per agent; registering two in one registry raises ``ValueError``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = GENAI_LABELS
        self._cache: dict[tuple[str, ...], _GenAiChildren] = {}
        self._cache_lock = threading.Lock()
        self._request_model = _Bounded(MAX_MODELS)
        self._tenant = _Bounded(MAX_TENANTS)
        self._response_model = _Bounded(MAX_MODELS)

        def histogram(
            otel: str, doc: str, buckets: tuple[float, ...], *, unit: str = "seconds",
            extra: tuple[str, ...] = (),
        ) -> Histogram:  # fmt: skip
            return Histogram(
                names.prometheus_name(otel), doc, [*labels, *extra], unit=unit,
                buckets=buckets, registry=registry,
            )  # fmt: skip

        self.token_usage = histogram(
            names.CLIENT_TOKEN_USAGE, "Input and output tokens per answer",
            tuple(float(b) for b in names.TOKEN_BUCKETS), unit="",
            extra=(names.label(names.ATTR_TOKEN_TYPE),),
        )  # fmt: skip
        self.client_duration = histogram(
            names.CLIENT_OPERATION_DURATION, "Request start to last answer byte, at the edge",
            names.DURATION_BUCKETS,
        )  # fmt: skip
        self.client_first_chunk = histogram(
            names.CLIENT_TIME_TO_FIRST_CHUNK, "Request start to first streamed byte, at the edge",
            names.FIRST_TOKEN_BUCKETS,
        )  # fmt: skip
        self.client_per_chunk = histogram(
            names.CLIENT_TIME_PER_OUTPUT_CHUNK, "Mean gap between streamed chunks of an answer",
            names.CHUNK_BUCKETS,
        )  # fmt: skip
        self.server_duration = histogram(
            names.SERVER_REQUEST_DURATION, "Answering upstream's request duration",
            names.DURATION_BUCKETS,
        )  # fmt: skip
        self.server_first_token = histogram(
            names.SERVER_TIME_TO_FIRST_TOKEN, "Answering upstream's time to its first byte",
            names.FIRST_TOKEN_BUCKETS,
        )  # fmt: skip
        self.server_per_token = histogram(
            names.SERVER_TIME_PER_OUTPUT_TOKEN, "Answering upstream's time per output token",
            names.OUTPUT_TOKEN_BUCKETS,
        )  # fmt: skip
        self.requests = Counter(
            "tiermesh_edge_requests", "Requests the app listener finished",
            ["route", "code", "answered"], registry=registry,
        )  # fmt: skip
        self.answers = Counter(
            "tiermesh_answers", "Answers by answering tier and chain position",
            ["tier", "backend", "route", "tenant", "position", "reason"], registry=registry,
        )  # fmt: skip
        self.fail_closed = Counter(
            "tiermesh_fail_closed", "503s to restricted or unlabelled requests",
            ["route", "cause"], registry=registry,
        )  # fmt: skip
        self.overhead = Histogram(
            "tiermesh_overhead", "Request start to the answering upstream's first byte sent",
            ["route"], unit="seconds", registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 1.0),
        )  # fmt: skip
        self.cascade_steps = Counter(
            "tiermesh_cascade_steps", "Cascade steps asked",
            ["route", "step", "tier", "backend", "code"], registry=registry,
        )  # fmt: skip

    def observe(self, entry: accesslog_pb2.HTTPAccessLogEntry) -> EntryFacts:
        """Count one entry (module doc); returns what was read from it."""
        facts = read_entry(entry)
        tenant = "" if facts.authz_denied or not facts.tenant else self._tenant(facts.tenant)
        facts = replace(facts, tenant=tenant)
        answered = facts.answered
        self.requests.labels(
            facts.route, str(facts.status), "upstream" if answered else "local"
        ).inc()
        if facts.step is not None:
            match = _STEP_ROUTE.match(facts.route)
            outer = match.group("route") if match else facts.route
            self.cascade_steps.labels(
                outer, str(facts.step), facts.tier, facts.backend, str(facts.status)
            ).inc()
            return facts
        if facts.status == 503 and not answered and facts.sensitivity in ("restricted", ""):
            cause = (
                "authz" if facts.authz_denied
                else "no_healthy_upstream" if facts.no_healthy_upstream
                else "unreachable" if facts.unreachable
                else "refused"
            )  # fmt: skip
            self.fail_closed.labels(facts.route, cause).inc()
        if facts.operation is None:
            return facts
        self._observe_genai(facts)
        return facts

    def _observe_genai(self, facts: EntryFacts) -> None:
        answered = facts.answered
        ok = 200 <= facts.status < 400
        cascade = facts.cascade_steps > 0
        values = (
            facts.operation or "",
            facts.backend,
            self._request_model(facts.request_model),
            self._response_model(facts.response_model),
            "" if ok else str(facts.status),
            facts.tier,
            facts.backend,
            facts.tenant,
            facts.route,
        )
        h = self._children(values)
        t = facts.timings
        if (end := t.get("time_to_last_downstream_tx_byte")) is not None:
            h.client_duration.observe(end)
        if not answered:
            return
        where, reason = position(facts)
        self.answers.labels(
            facts.tier, facts.backend, facts.route, facts.tenant, where, reason
        ).inc()
        sent = t.get("time_to_first_upstream_tx_byte")
        if sent is not None and not cascade:
            self.overhead.labels(facts.route).observe(sent)
        output = facts.output_tokens
        first_out = t.get("time_to_first_downstream_tx_byte")
        if facts.stream and ok and first_out is not None:
            h.client_first_chunk.observe(first_out)
            if output is not None and output > 1 and end is not None:
                h.client_per_chunk.observe((end - first_out) / (output - 1))
        if facts.input_tokens is not None and output is not None:
            h.input_tokens.observe(facts.input_tokens)
            h.output_tokens.observe(output)
        if cascade or sent is None:
            return
        first_in = t.get("time_to_first_upstream_rx_byte")
        last_in = t.get("time_to_last_upstream_rx_byte")
        if last_in is not None:
            h.server_duration.observe(max(0.0, last_in - sent))
        if first_in is not None and ok:
            h.server_first_token.observe(max(0.0, first_in - sent))
            if last_in is not None and output is not None and output > 1:
                h.server_per_token.observe(max(0.0, last_in - first_in) / (output - 1))

    def _children(self, values: tuple[str, ...]) -> _GenAiChildren:
        """The GenAI histograms' children for one label set (looked up once, then kept:
        ``labels()`` costs more than the observations)."""
        found = self._cache.get(values)
        if found is not None:
            return found
        found = _GenAiChildren(
            client_duration=self.client_duration.labels(*values),
            client_first_chunk=self.client_first_chunk.labels(*values),
            client_per_chunk=self.client_per_chunk.labels(*values),
            server_duration=self.server_duration.labels(*values),
            server_first_token=self.server_first_token.labels(*values),
            server_per_token=self.server_per_token.labels(*values),
            input_tokens=self.token_usage.labels(*values, names.TOKEN_INPUT),
            output_tokens=self.token_usage.labels(*values, names.TOKEN_OUTPUT),
        )
        with self._cache_lock:
            if len(self._cache) < _CACHED_LABEL_SETS:
                self._cache[values] = found
        return found
