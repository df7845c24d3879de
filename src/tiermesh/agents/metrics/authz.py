"""Request-time decision metrics: what the node's ext_authz server decided, and how fast.

:meth:`AuthzMetrics.observe` takes each :class:`~tiermesh.agents.authz.Verdict` after it
is durable (the authz server calls it after the decision's record was written, before it
answers Envoy; a few counter increments). Prometheus names:

- ``tiermesh_authz_decisions_total{hop, outcome, status}``: ``outcome`` allow / deny /
  error / unrecorded (the record could not be written; Envoy's ``status_on_error``
  answers), ``status`` the HTTP status the verdict gives (401, 403, 503, 200); decisions/s
  is its rate.
- ``tiermesh_authz_duration_seconds{hop}``: the check as the server handles it, request
  decoded → verdict durable (inspection, policy, the fsync'ed record).
- ``tiermesh_sensitivity_decisions_total{declared, floor, effective}``: the caller's label
  (``missing``, ``unknown`` for a label not in the scale), the floor computed in code, the
  routed sensitivity (allowed requests only).
- ``tiermesh_sensitivity_reasons_total{reason}``: why the effective label is above the
  declared one: the floor's reasons in fixed categories (``pii_body``, ``pii_path``,
  ``pii_query``, ``pii_header``, ``truncated``, ``uninspectable``, ``content_encoded``,
  ``label_missing``, ``label_unknown``) and ``policy`` when the policy raised it above
  the floor; one count per reason of each allowed request.
- ``tiermesh_pii_findings_total{kind, where}``: detector findings (matches counted), in
  the body, path, query or headers.

Thread safety: any thread (prometheus-client's metrics are thread-safe).
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram

from tiermesh.agents.authz import Verdict
from tiermesh.agents.authz.floor import LEVELS

__all__ = ["AUTHZ_METRICS", "AuthzMetrics", "reason_category"]

AUTHZ_METRICS: Final = (
    "tiermesh_authz_decisions",
    "tiermesh_authz_duration_seconds",
    "tiermesh_sensitivity_decisions",
    "tiermesh_sensitivity_reasons",
    "tiermesh_pii_findings",
)
"""Prometheus names registered here (counters without their ``_total``)."""

_RANK: Final[dict[str, int]] = {level: rank for rank, level in enumerate(LEVELS)}


_CATEGORIES: Final = (
    ("body contains", "pii_body"),
    ("path ", "pii_path"),
    ("query ", "pii_query"),
    ("header ", "pii_header"),
    ("body not fully inspected", "truncated"),
    ("body is content-encoded", "content_encoded"),
    ("x-tiermesh-sensitivity missing", "label_missing"),
    ("x-tiermesh-sensitivity is not", "label_unknown"),
)


def reason_category(reason: str) -> str:
    """A floor reason (:func:`~tiermesh.agents.authz.floor.sensitivity_floor`) as a
    fixed category; the reason itself may name a header."""
    for prefix, category in _CATEGORIES:
        if reason.startswith(prefix):
            return category
    return "uninspectable"


def _declared(value: str | None) -> str:
    if value is None:
        return "missing"
    return value if value in _RANK else "unknown"


class AuthzMetrics:
    """The metrics above, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "tiermesh_authz_decisions", "Request-time decisions",
            ["hop", "outcome", "status"], registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "tiermesh_authz_duration", "ext_authz check, decoded to durable verdict",
            ["hop"], unit="seconds", registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5),
        )  # fmt: skip
        self.sensitivity = Counter(
            "tiermesh_sensitivity_decisions", "Declared, floor and effective sensitivity",
            ["declared", "floor", "effective"], registry=registry,
        )  # fmt: skip
        self.reasons = Counter(
            "tiermesh_sensitivity_reasons", "Why a request's sensitivity was raised",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.findings = Counter(
            "tiermesh_pii_findings", "Personal data found by the detectors",
            ["kind", "where"], registry=registry,
        )  # fmt: skip

    def observe(
        self, verdict: Verdict | None, seconds: float, hop: Literal["app", "mesh"] = "app"
    ) -> None:
        """Count one check; ``verdict`` None: it could not be recorded (module doc)."""
        self.duration.labels(hop).observe(seconds)
        if verdict is None:
            self.decisions.labels(hop, "unrecorded", "503").inc()
            return
        self.decisions.labels(hop, verdict.outcome, str(verdict.status)).inc()
        for kind, where, count in verdict.findings:
            self.findings.labels(kind, where).inc(count)
        floor = verdict.floor
        if not verdict.allowed or floor is None:
            return
        effective = str(verdict.decision.get("sensitivity", ""))
        declared = _declared(verdict.declared)
        self.sensitivity.labels(declared, floor.level, effective).inc()
        for category in sorted({reason_category(r) for r in floor.reasons}):
            self.reasons.labels(category).inc()
        if _RANK.get(effective, 0) > _RANK[floor.level]:
            self.reasons.labels("policy").inc()
