"""Resilience settings shared by the catalog (defaults, overrides) and the plan.

Durations are integer milliseconds. Every model here maps one-to-one onto an
Envoy setting; the compiler does no arithmetic on them.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tiermesh.controlplane.api._base import Contract

__all__ = [
    "CircuitBreaker",
    "HealthCheck",
    "HealthCheckTiming",
    "Hedge",
    "OutlierDetection",
    "RateLimit",
    "RetryPolicy",
]


class RetryPolicy(Contract):
    """Retries of one chain step against the same backend (Envoy ``retry_policy``)."""

    count: int = Field(ge=0, le=10)
    """Retries after the first attempt; 0 disables retrying this step."""
    backoff_base_ms: int = Field(gt=0)
    """First backoff interval; Envoy doubles it per retry, with jitter."""
    backoff_max_ms: int = Field(gt=0)
    """Upper bound of one backoff interval; at least ``backoff_base_ms``."""
    retry_on: tuple[str, ...] = ("connect-failure", "refused-stream", "5xx")
    """Envoy ``retry_on`` conditions, e.g. ``5xx``, ``reset``, ``connect-failure``."""

    @model_validator(mode="after")
    def _max_not_below_base(self) -> RetryPolicy:
        if self.backoff_max_ms < self.backoff_base_ms:
            raise ValueError("backoff_max_ms must be at least backoff_base_ms")
        return self


class Hedge(Contract):
    """Move on to the next step of the chain when this one starts answering late."""

    per_try_timeout_ms: int = Field(gt=0)
    """First-byte deadline: when no response byte (for streams: no first token)
    has arrived after this long, the request goes to the next step."""


class CircuitBreaker(Contract):
    """Envoy circuit-breaker thresholds of one backend cluster (default priority)."""

    max_connections: int = Field(ge=1)
    """Concurrent upstream connections."""
    max_pending: int = Field(ge=0)
    """Requests queued while waiting for a connection."""
    max_requests: int = Field(ge=1)
    """Concurrent requests in flight; usually the backend's capacity."""
    max_retries: int = Field(ge=0)
    """Concurrent retries across all requests to the cluster."""


class OutlierDetection(Contract):
    """Passive health: eject an endpoint that keeps failing (Envoy ``outlier_detection``)."""

    consecutive_5xx: int = Field(ge=1)
    """Consecutive 5xx (or connect failures) that eject the endpoint."""
    interval_ms: int = Field(gt=0)
    """How often ejection analysis runs."""
    base_ejection_ms: int = Field(gt=0)
    """Ejection time, multiplied by the number of times the endpoint was ejected."""
    max_ejection_percent: int = Field(ge=0, le=100)
    """Most endpoints of the cluster that may be ejected at once, in percent."""


class HealthCheckTiming(Contract):
    """Active health-check timing (the path comes from the backend)."""

    interval_ms: int = Field(gt=0)
    """Time between two checks."""
    timeout_ms: int = Field(gt=0)
    """A check slower than this fails."""
    unhealthy_threshold: int = Field(ge=1)
    """Consecutive failures that mark the endpoint unhealthy."""
    healthy_threshold: int = Field(ge=1)
    """Consecutive successes that mark it healthy again."""


class HealthCheck(HealthCheckTiming):
    """Active HTTP health check of one backend cluster."""

    path: str = Field(pattern=r"^/")
    """HTTP path checked with GET; a 200 means healthy."""


class RateLimit(Contract):
    """Token bucket per tenant (Envoy local rate limit), counted in requests."""

    tokens_per_fill: int = Field(ge=1)
    """Tokens added each fill."""
    fill_interval_ms: int = Field(gt=0)
    """Time between two fills."""
    max_tokens: int = Field(ge=1)
    """Bucket size: the largest burst."""
