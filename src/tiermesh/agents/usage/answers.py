"""Answer counts: which tier answered each request, and whether it was the route's first
choice, classified from the access-log entries the usage server already receives.

:func:`classify` reads one ``HTTPAccessLogEntry`` (what the compiled access log in
:mod:`tiermesh.controlplane.generators.usage` sends) and returns an :class:`Answer` or
None:

- **Not counted** (None): the cascade handler's own step requests (route
  ``<route>/cascade/<n>``: internal, the client sees the handler's one answer), entries
  without a response status (the client left first), and requests no listener route
  matched with no status.
- **Refused**: no backend answered (no ``x-tiermesh-tier`` answer header, no tier tag and
  no upstream address): ext_authz's denials (401, 403), the unmatched route's 404, the
  rate limit's 429, a 503 with every allowed tier down. Counted by status.
- **Answered**: the tier is the answer's ``x-tiermesh-tier`` (a cascade answer carries
  the tier of the step it serves), else the answering endpoint's tier tag. Its position
  in the chain, first to last:

  1. a cascade answer (``x-tiermesh-cascade-steps`` above 1): fallback, ``cascade``;
  2. a request of a tenant whose budget is spent (ext_authz set ``x-tiermesh-budget:
     exhausted``, which selects the ``<route>/budget`` fallback route, or the control plane
     has re-planned the tenant's routes onto its fallback chain), or a budget fallback
     route (route name ending ``/budget``): fallback, ``budget``;
  3. a chain route answered by a backend (backend tag) other than its first step's (the
     route's first-backend tag; else, from an older control plane, the first member of an
     upstream cluster named ``chain|<first>|…``): fallback, ``retry`` when Envoy tried
     more than once, else ``unavailable`` (the first step was ejected or unhealthy and
     never tried);
  4. anything else (one-step routes, the first step of a chain, a cascade served by its
     first step): first choice.

:class:`AnswerTally` adds them up between reports. Thread-safe.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Final, get_args

from envoy.data.accesslog.v3 import accesslog_pb2

from tiermesh.controlplane.api import MAX_ANSWER_KEYS, AnswerCounts, FallbackReason, Tier

__all__ = ["Answer", "AnswerTally", "classify"]

TIER_HEADER: Final = "x-tiermesh-tier"
STEPS_HEADER: Final = "x-tiermesh-cascade-steps"
BACKEND_TAG: Final = "tiermesh.backend"
TIER_TAG: Final = "tiermesh.tier"
FIRST_TAG: Final = "tiermesh.first"
CHAIN_PREFIX: Final = "chain|"
BUDGET_SUFFIX: Final = "/budget"
BUDGET_HEADER: Final = "x-tiermesh-budget"
BUDGET_EXHAUSTED: Final = "exhausted"
CASCADE_STEP_ROUTE: Final = re.compile(r"/cascade/[0-9]+$")
_TIERS: Final[frozenset[str]] = frozenset(get_args(Tier))


@dataclass(frozen=True, slots=True)
class Answer:
    """One counted request: ``tier`` None means the node refused it with ``status``."""

    status: int
    tier: Tier | None
    fallback: bool = False
    reason: FallbackReason | None = None


def _tier(*values: str) -> Tier | None:
    for value in values:
        for part in value.split(","):
            candidate = part.strip()
            if candidate in _TIERS:
                return candidate  # type: ignore[return-value]
    return None


def _steps(value: str) -> int:
    try:
        return int(value.split(",", 1)[0].strip() or "0")
    except ValueError:
        return 0


def classify(entry: accesslog_pb2.HTTPAccessLogEntry) -> Answer | None:
    """The :class:`Answer` an access-log entry records, or None (module doc). Pure."""
    common = entry.common_properties
    route = common.route_name
    if CASCADE_STEP_ROUTE.search(route):
        return None
    status = int(entry.response.response_code.value)
    if status == 0:
        return None
    headers = entry.response.response_headers
    tier = _tier(headers.get(TIER_HEADER, ""), common.custom_tags.get(TIER_TAG, ""))
    if tier is None:
        if common.HasField("upstream_remote_address") and status < 400:
            return None  # answered by something that is no tier (never on an app route)
        return Answer(status, None)
    reason = _fallback_reason(entry)
    return Answer(status, tier, reason is not None, reason)


def _fallback_reason(entry: accesslog_pb2.HTTPAccessLogEntry) -> FallbackReason | None:
    """Why an answered entry is a fallback (module doc, steps 1-3), None: first choice."""
    common = entry.common_properties
    if _steps(entry.response.response_headers.get(STEPS_HEADER, "")) > 1:
        return "cascade"
    exhausted = entry.request.request_headers.get(BUDGET_HEADER, "") == BUDGET_EXHAUSTED
    if exhausted or common.route_name.endswith(BUDGET_SUFFIX):
        return "budget"
    backend = common.custom_tags.get(BACKEND_TAG, "")
    first = common.custom_tags.get(FIRST_TAG, "")
    cluster = common.upstream_cluster
    if not first and cluster.startswith(CHAIN_PREFIX):
        first = cluster[len(CHAIN_PREFIX) :].split("|", 1)[0]
    if not first or not backend or backend == first:
        return None
    return "retry" if common.upstream_request_attempt_count > 1 else "unavailable"


class AnswerTally:
    """Answers counted since the last :meth:`take`. Thread-safe (one lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_tier: dict[Tier, int] = {}
        self._first = 0
        self._fallback = 0
        self._reasons: dict[FallbackReason, int] = {}
        self._refused: dict[str, int] = {}

    def add(self, answers: list[Answer]) -> None:
        """Count ``answers``. A refusal status beyond :data:`MAX_ANSWER_KEYS` distinct ones
        is counted under ``599`` rather than growing the table."""
        with self._lock:
            for answer in answers:
                if answer.tier is None:
                    key = str(answer.status)
                    if key not in self._refused and len(self._refused) >= MAX_ANSWER_KEYS - 1:
                        key = "599"
                    self._refused[key] = self._refused.get(key, 0) + 1
                    continue
                self._by_tier[answer.tier] = self._by_tier.get(answer.tier, 0) + 1
                if answer.fallback:
                    self._fallback += 1
                    if answer.reason is not None:
                        self._reasons[answer.reason] = self._reasons.get(answer.reason, 0) + 1
                else:
                    self._first += 1

    def pending(self) -> bool:
        """Something was counted since the last :meth:`take`."""
        with self._lock:
            return bool(self._by_tier or self._refused)

    def seen(self) -> int:
        """Requests counted (answered or refused) since the last :meth:`take`."""
        with self._lock:
            return sum(self._by_tier.values()) + sum(self._refused.values())

    def take(self) -> AnswerCounts | None:
        """The counts since the last call, and start again from zero; None when nothing
        was counted."""
        with self._lock:
            if not self._by_tier and not self._refused:
                return None
            counts = AnswerCounts(
                by_tier=dict(self._by_tier),
                first_choice=self._first,
                fallback=self._fallback,
                fallback_reasons=dict(self._reasons),
                refused=dict(self._refused),
            )
            self._by_tier, self._first, self._fallback = {}, 0, 0
            self._reasons, self._refused = {}, {}
            return counts
