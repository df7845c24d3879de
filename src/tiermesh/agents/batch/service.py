"""The batch lane's operations, independent of HTTP: :class:`BatchService`.

- :meth:`~BatchService.create_file` stores an uploaded JSONL file (the tenant's).
- :meth:`~BatchService.create_batch` reads the file, decides every line
  (:class:`~.lines.LineDecider`: one audited decision each), queues each allowed line as
  a job on its class's subject — the widest class the tenant's tiers allow for the line's
  sensitivity (:class:`TenantTiers`, from the catalog) — and answers with the batch id at
  once; a refused line, or one no class fits, gets its failed result right away and is
  never queued.
- :meth:`~BatchService.batch` shows a batch: status and counts are computed from the
  written results, so they hold whichever worker wrote them and whenever.
- :meth:`~BatchService.cancel` marks the batch cancelled, drops its queued jobs and
  writes a ``batch_cancelled`` result for every line that had none; a job already running
  finishes, but its result loses to the cancellation's.
- :meth:`~BatchService.file_content` serves an input file, or a finished batch's output
  (``<batch id>-output``: successful lines) or error file (``<batch id>-errors``), built
  from the results in line order.

A batch and its files are visible only to the tenant that created them (others get
not found). Task safety: one event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tiermesh.agents.batch.errors import (
    BatchNotFound,
    BatchStateConflict,
    FileNotFound,
    InvalidBatchInput,
)
from tiermesh.agents.batch.lines import BatchLine, LineDecider, parse_lines
from tiermesh.agents.batch.queue import FileMeta, JobQueue
from tiermesh.controlplane.api import Sensitivity, Tier
from tiermesh.controlplane.api.batch import (
    BATCH_ENDPOINTS,
    BatchCounts,
    BatchRecord,
    BatchStatus,
    JobRecord,
    JobResult,
    job_class,
    tiers_of_class,
)

__all__ = [
    "CATALOG_DEFAULTS",
    "LOCAL_ONLY",
    "BatchService",
    "BatchView",
    "TenantTiers",
    "error_file_id",
    "output_file_id",
]

_DECIDE_CONCURRENCY: Final = 32
_SENSITIVITIES: Final = ("public", "internal", "restricted")
_WINDOWS: Final = ("24h",)
_CANCELLED: Final = "batch_cancelled"


@dataclass(frozen=True, slots=True)
class TenantTiers:
    """A tenant's tiers as its catalog entry gives them: all it may use, and those its
    restricted data may use."""

    allowed: tuple[Tier, ...]
    restricted: tuple[Tier, ...]


LOCAL_ONLY: Final = TenantTiers(allowed=("local",), restricted=("local",))
"""What a tenant the catalog does not name may use."""


def CATALOG_DEFAULTS(tenant: str) -> TenantTiers:  # noqa: N802 - a constant lookup
    """Every tier, and the catalog's default for restricted data (``local``): for callers
    without a catalog (tests, benchmarks)."""
    return TenantTiers(allowed=("local", "private", "cloud"), restricted=("local",))


def output_file_id(batch_id: str) -> str:
    return f"file-{batch_id}-output"


def error_file_id(batch_id: str) -> str:
    return f"file-{batch_id}-errors"


@dataclass(frozen=True, slots=True)
class BatchView:
    """A batch as the API shows it: the record, its status and counts now."""

    record: BatchRecord
    status: BatchStatus
    counts: BatchCounts

    def to_json(self) -> dict[str, Any]:
        """The OpenAI batch object."""
        done = self.status in ("completed", "cancelled", "failed")
        record = self.record
        return {
            "id": record.id,
            "object": "batch",
            "endpoint": record.endpoint,
            "input_file_id": record.input_file_id,
            "completion_window": record.completion_window,
            "status": self.status,
            "output_file_id": output_file_id(record.id) if done else None,
            "error_file_id": error_file_id(record.id) if done else None,
            "created_at": record.created_at,
            "cancelled_at": record.cancelled_at,
            "request_counts": self.counts.model_dump(),
            "metadata": record.metadata,
        }


def _status(record: BatchRecord, counts: BatchCounts) -> BatchStatus:
    resolved = counts.completed + counts.failed >= record.total
    if record.cancelled_at is not None:
        return "cancelled" if resolved else "cancelling"
    return "completed" if resolved else "in_progress"


class BatchService:
    """See the module docstring. Does not own the queue or the decider."""

    def __init__(
        self,
        queue: JobQueue,
        decider: LineDecider,
        *,
        tenant_tiers: Callable[[str], TenantTiers] = CATALOG_DEFAULTS,
    ) -> None:
        self._queue = queue
        self._decider = decider
        self._tenant_tiers = tenant_tiers

    # -- files --------------------------------------------------------------------------------

    async def create_file(
        self, tenant: str, content: bytes, *, filename: str, purpose: str = "batch"
    ) -> FileMeta:
        if purpose != "batch":
            raise InvalidBatchInput("purpose", "only 'batch' files are accepted")
        if len(content) > self._queue.settings.max_file_bytes:
            limit = self._queue.settings.max_file_bytes
            raise InvalidBatchInput("file", f"larger than {limit} bytes")
        meta = FileMeta(
            id=f"file-{uuid.uuid4().hex}",
            tenant=tenant,
            purpose=purpose,
            filename=filename[:256] or "batch.jsonl",
            bytes=len(content),
            created_at=int(time.time()),
        )
        await self._queue.put_file(meta, content)
        return meta

    async def file(self, tenant: str, file_id: str) -> FileMeta:
        meta = await self._queue.file_meta(file_id)
        if meta is None or meta.tenant != tenant:
            raise FileNotFound(file_id)
        return meta

    async def file_content(self, tenant: str, file_id: str) -> bytes:
        for suffix, succeeded in (("-output", True), ("-errors", False)):
            if file_id.startswith("file-batch_") and file_id.endswith(suffix):
                batch_id = file_id[len("file-") : -len(suffix)]
                return await self._result_file(tenant, batch_id, file_id, succeeded=succeeded)
        await self.file(tenant, file_id)
        return await self._queue.file_content(file_id)

    async def _result_file(
        self, tenant: str, batch_id: str, file_id: str, *, succeeded: bool
    ) -> bytes:
        try:
            view = await self.batch(tenant, batch_id)
        except BatchNotFound as exc:
            raise FileNotFound(file_id) from exc
        if view.status not in ("completed", "cancelled", "failed"):
            raise FileNotFound(file_id)
        results = await self._queue.results(batch_id)
        lines = [
            json.dumps(_output_line(batch_id, result))
            for line, result in sorted(results.items())
            if result.succeeded == succeeded and line < view.record.total
        ]
        return "".join(f"{line}\n" for line in lines).encode()

    # -- batches ------------------------------------------------------------------------------

    async def create_batch(
        self,
        tenant: str,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        declared: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> BatchView:
        """Decide and queue every line of ``input_file_id``; returns once every job is
        accepted (stored by JetStream) and the batch is recorded.

        ``declared``: the label the submission was routed with (``x-tiermesh-sensitivity``
        as the node's authorizer set it); each line's floor starts from it.

        Raises:
            InvalidBatchInput: the request or a line is malformed (nothing is queued).
            FileNotFound: no such file of this tenant.
            QueueUnavailable: JetStream failed; jobs queued so far are dropped again.
        """
        if endpoint not in BATCH_ENDPOINTS:
            raise InvalidBatchInput("endpoint", f"must be one of {', '.join(BATCH_ENDPOINTS)}")
        if completion_window not in _WINDOWS:
            raise InvalidBatchInput("completion_window", "must be '24h'")
        if declared is not None and declared not in _SENSITIVITIES:
            declared = None
        await self.file(tenant, input_file_id)
        lines = parse_lines(await self._queue.file_content(input_file_id), endpoint)
        record = BatchRecord(
            id=f"batch_{uuid.uuid4().hex}",
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            tenant=tenant,
            created_at=int(time.time()),
            total=len(lines),
            metadata=metadata,
        )
        gate = asyncio.Semaphore(_DECIDE_CONCURRENCY)

        async def one(line: BatchLine) -> None:
            async with gate:
                await self._submit_line(record, line, declared)

        try:
            async with asyncio.TaskGroup() as group:
                for line in lines:
                    group.create_task(one(line))
        except BaseExceptionGroup as failed:
            await self._queue.purge_batch(record.id)
            raise failed.exceptions[0] from None
        await self._queue.put_batch(record)
        return BatchView(
            record, "in_progress", BatchCounts(total=record.total, completed=0, failed=0)
        )

    async def _submit_line(
        self, record: BatchRecord, line: BatchLine, declared: str | None
    ) -> None:
        decision = await self._decider.decide(line, record.tenant, declared)
        if not decision.allowed or decision.sensitivity not in _SENSITIVITIES:
            refused = JobResult(
                custom_id=line.custom_id,
                line=line.line,
                error={"code": "request_denied", "message": decision.reason or "denied"},
            )
            await self._queue.write_result(record.id, refused)
            return
        sensitivity: Sensitivity = decision.sensitivity  # type: ignore[assignment]
        tiers = self._tenant_tiers(record.tenant)
        job_cls = job_class(sensitivity, tiers.allowed, tiers.restricted)
        if job_cls is None:
            refused = JobResult(
                custom_id=line.custom_id,
                line=line.line,
                error={
                    "code": "no_tier",
                    "message": f"no worker tier the tenant allows for {sensitivity} data",
                },
            )
            await self._queue.write_result(record.id, refused)
            return
        job = JobRecord(
            batch_id=record.id,
            line=line.line,
            custom_id=line.custom_id,
            url=line.url,
            body=line.body,
            tenant=record.tenant,
            sensitivity=sensitivity,
            allowed_tiers=tiers_of_class(job_cls),
            decision_id=decision.decision_id,
        )
        await self._queue.enqueue(job_cls, job)

    async def batch(self, tenant: str, batch_id: str) -> BatchView:
        found = await self._queue.batch(batch_id)
        if found is None or found[0].tenant != tenant:
            raise BatchNotFound(batch_id)
        record = found[0]
        results = await self._queue.results(batch_id)
        ours = [r for line, r in results.items() if line < record.total]
        completed = sum(1 for r in ours if r.succeeded)
        counts = BatchCounts(total=record.total, completed=completed, failed=len(ours) - completed)
        return BatchView(record, _status(record, counts), counts)

    async def cancel(self, tenant: str, batch_id: str) -> BatchView:
        """See the module docstring; cancelling a cancelled batch is a no-op.

        Raises:
            BatchNotFound: no such batch of this tenant.
            BatchStateConflict: the batch already completed.
        """
        view = await self.batch(tenant, batch_id)
        if view.status == "completed":
            raise BatchStateConflict(batch_id, view.status, "cancel")
        for _ in range(10):
            found = await self._queue.batch(batch_id)
            assert found is not None
            record, revision = found
            if record.cancelled_at is not None:
                break
            marked = record.model_copy(update={"cancelled_at": int(time.time())})
            if await self._queue.update_batch(marked, revision):
                break
        await self._queue.purge_batch(batch_id)
        results = await self._queue.results(batch_id)
        lines = parse_lines(await self._queue.file_content(record.input_file_id), record.endpoint)
        for line in lines:
            if line.line not in results:
                await self._queue.write_result(
                    batch_id,
                    JobResult(
                        custom_id=line.custom_id,
                        line=line.line,
                        error={"code": _CANCELLED, "message": "the batch was cancelled"},
                    ),
                )
        return await self.batch(tenant, batch_id)


def _output_line(batch_id: str, result: JobResult) -> dict[str, Any]:
    """One line of an output or error file, in the OpenAI batch output shape."""
    response = None
    if result.status_code is not None:
        response = {
            "status_code": result.status_code,
            "request_id": f"{batch_id}-{result.line}",
            "body": result.body,
        }
    return {
        "id": f"batch_req_{batch_id[len('batch_') :]}_{result.line}",
        "custom_id": result.custom_id,
        "response": response,
        "error": result.error,
    }
