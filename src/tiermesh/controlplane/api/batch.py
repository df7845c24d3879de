"""The batch lane's contracts: queue subjects, the job and batch records, a job's result.

A batch (the OpenAI Batch API shape: a JSONL file of requests, ``/v1/batches``) is split
into one **job** per line. Each line is decided like a request (its own audited decision);
its sensitivity fixes the **job class**, the widest tier that may run it, and so the
JetStream subject it is queued on (:func:`job_subject`):

=============  =====================================  ===================================
class          who may take it                        jobs
=============  =====================================  ===================================
``local``      local-tier workers only                restricted, tenant allows only local
``private``    local and private workers (on-prem)    restricted (tenant allows private)
``cloud``      any worker                             public, internal (tenant allows all)
=============  =====================================  ===================================

The class is the widest whose tiers the tenant's catalog entry allows for that
sensitivity (:func:`job_class`): a tenant not allowed the cloud tier gets ``private`` (or
``local``) for its public lines too.

A worker subscribes only to the classes its tier may take (:func:`classes_for_tier`) and
re-checks each job's recorded sensitivity and allowed tiers before running it
(:func:`tier_may_run`, fail closed): a restricted job never runs on a cloud worker, even
one published on the wrong subject.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final, Literal, TypeAlias

from pydantic import Field

from tiermesh.controlplane.api._base import Contract, Sensitivity, Tier

__all__ = [
    "BATCH_ENDPOINTS",
    "JOB_STREAM",
    "JOB_SUBJECT_PREFIX",
    "BatchCounts",
    "BatchRecord",
    "BatchStatus",
    "JobClass",
    "JobRecord",
    "JobResult",
    "classes_for_tier",
    "job_class",
    "job_subject",
    "tier_may_run",
    "tiers_of_class",
]

JOB_STREAM: Final = "TIERMESH_JOBS"
"""The JetStream stream (work-queue retention, file storage) every job is queued on."""
JOB_SUBJECT_PREFIX: Final = "tiermesh.jobs"
"""Jobs are published on ``tiermesh.jobs.<class>.<batch id>``."""

JobClass: TypeAlias = Literal["local", "private", "cloud"]
"""The widest tier a job may run on (module docstring)."""
BatchStatus: TypeAlias = Literal[
    "validating", "in_progress", "completed", "failed", "cancelling", "cancelled"
]
BATCH_ENDPOINTS: Final = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
"""Paths a batch line may name (``url``), as the OpenAI Batch API allows."""

_TIERS_OF_CLASS: Final[dict[JobClass, tuple[Tier, ...]]] = {
    "local": ("local",),
    "private": ("local", "private"),
    "cloud": ("local", "private", "cloud"),
}


def tiers_of_class(job_class: JobClass) -> tuple[Tier, ...]:
    """The tiers whose workers may take a job of ``job_class``."""
    return _TIERS_OF_CLASS[job_class]


def classes_for_tier(tier: Tier) -> tuple[JobClass, ...]:
    """The job classes a worker of ``tier`` subscribes to, most restricted first."""
    return tuple(c for c, tiers in _TIERS_OF_CLASS.items() if tier in tiers)


def job_class(
    sensitivity: Sensitivity, allowed_tiers: Collection[str], restricted_tiers: Collection[str]
) -> JobClass | None:
    """The widest class all of whose tiers a line routed with ``sensitivity`` may use: the
    tenant's ``allowed_tiers``, and for restricted data also its ``restricted_tiers``
    (never ``cloud``, whatever they say). None when no class fits (the tenant may not use
    the local tier): such a line is not queued."""
    permitted = set(allowed_tiers)
    if sensitivity == "restricted":
        permitted &= set(restricted_tiers) - {"cloud"}
    for candidate in ("cloud", "private", "local"):
        if set(_TIERS_OF_CLASS[candidate]) <= permitted:
            return candidate
    return None


def job_subject(job_class: JobClass, batch_id: str) -> str:
    """The subject a job of ``job_class`` in batch ``batch_id`` is published on."""
    return f"{JOB_SUBJECT_PREFIX}.{job_class}.{batch_id}"


def tier_may_run(tier: str, sensitivity: str, allowed_tiers: tuple[str, ...]) -> bool:
    """Whether a worker of ``tier`` may run a job recorded with ``sensitivity`` and
    ``allowed_tiers``. Fails closed: an unknown tier or label, a tier not allowed, or a
    restricted job on a cloud worker is False."""
    if tier not in ("local", "private", "cloud") or tier not in allowed_tiers:
        return False
    if sensitivity == "restricted":
        return tier in ("local", "private")
    return sensitivity in ("public", "internal")


class JobRecord(Contract):
    """One queued job: a batch line, decided and routed."""

    batch_id: str = Field(pattern=r"^batch_[a-f0-9]{32}$")
    """The batch it belongs to."""
    line: int = Field(ge=0)
    """Its 0-based line number in the input file."""
    custom_id: str = Field(min_length=1, max_length=256)
    """The caller's id of the line (echoed in the result)."""
    url: str
    """The API path it calls (one of :data:`BATCH_ENDPOINTS`)."""
    body: dict[str, Any]
    """The request body sent to the model."""
    tenant: str
    """Who submitted it (from the tenant's credential)."""
    sensitivity: Sensitivity
    """The label its decision routed it with."""
    allowed_tiers: tuple[Tier, ...] = Field(min_length=1)
    """Tiers that may run it (:func:`tiers_of_class` of its class)."""
    decision_id: str
    """The audited decision that routed it."""


class JobResult(Contract):
    """One line's outcome, written once (the first write wins)."""

    custom_id: str
    line: int = Field(ge=0)
    status_code: int | None = None
    """The model server's HTTP status; None when the job never got an answer."""
    body: dict[str, Any] | None = None
    """The answer's JSON body."""
    error: dict[str, str] | None = None
    """``{code, message}`` when the line failed (refused, cancelled, upstream error)."""
    tier: str | None = None
    """The tier of the worker that ran it."""
    attempts: int = Field(default=1, ge=1)
    """Deliveries it took (JetStream redeliveries count)."""

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and self.status_code < 400


class BatchCounts(Contract):
    """Lines of a batch: all, answered with success, failed (cancelled lines included)."""

    total: int = Field(ge=0)
    completed: int = Field(ge=0)
    failed: int = Field(ge=0)


class BatchRecord(Contract):
    """A batch as stored; its status and counts are completed from the results on read."""

    id: str = Field(pattern=r"^batch_[a-f0-9]{32}$")
    input_file_id: str
    endpoint: str
    completion_window: str
    tenant: str
    created_at: int
    """Unix seconds."""
    total: int = Field(ge=0)
    cancelled_at: int | None = None
    """Set when a cancel was asked (the batch is then cancelling, then cancelled)."""
    metadata: dict[str, str] | None = None
