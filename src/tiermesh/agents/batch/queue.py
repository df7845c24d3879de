"""The batch lane's durable state on NATS JetStream: :class:`JobQueue`.

What lives where (all JetStream file storage, so a restarted server loses nothing it
acknowledged):

- the job stream :data:`~tiermesh.controlplane.api.batch.JOB_STREAM` (work-queue
  retention: a job is removed once a worker acknowledges it), one durable pull consumer
  per job class (``jobs-local``, ``jobs-private``, ``jobs-cloud``) filtered on that class's
  subjects, with an ack wait and a delivery limit: a job whose worker dies is redelivered;
- key-value bucket ``tiermesh_batches``: one :class:`BatchRecord` per batch id;
- key-value bucket ``tiermesh_results``: one :class:`JobResult` per ``<batch id>.<line>``,
  written with create-if-absent, so a line is finished once whoever races for it;
- key-value bucket ``tiermesh_files`` (metadata) and object store ``tiermesh_files``
  (content): uploaded JSONL files.

A job is *accepted* once JetStream acknowledged its publish (:meth:`JobQueue.enqueue`).
Etcd is not involved: it stays the source of truth for policy only.

Task safety: one event loop; any number of concurrent calls. The owner calls
:meth:`close`. Every JetStream failure surfaces as :class:`QueueUnavailable`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from tiermesh.agents.batch.errors import QueueUnavailable
from tiermesh.controlplane.api.batch import (
    JOB_STREAM,
    JOB_SUBJECT_PREFIX,
    BatchRecord,
    JobClass,
    JobRecord,
    JobResult,
    job_subject,
)

__all__ = ["FileMeta", "JobQueue", "QueueSettings", "ResultWrite", "consumer_name"]

_BATCHES: Final = "tiermesh_batches"
_RESULTS: Final = "tiermesh_results"
_FILES: Final = "tiermesh_files"
_CLASSES: Final[tuple[JobClass, ...]] = ("local", "private", "cloud")
_RESULT_HISTORY: Final = 5
"""Kept so an audit can see that a line was written once (the first write wins anyway)."""


def consumer_name(job_class: JobClass) -> str:
    """The durable consumer that hands out ``job_class`` jobs."""
    return f"jobs-{job_class}"


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """``ack_wait_s``: how long a delivered job may go without an ack or a progress
    heartbeat before JetStream hands it to another worker; ``max_deliver``: deliveries of
    one job before it is given up; ``timeout_s``: per JetStream request."""

    url: str
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    timeout_s: float = 5.0
    max_file_bytes: int = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileMeta:
    """An uploaded file: its id, owner, purpose, name, size and creation time."""

    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "purpose": self.purpose,
            "filename": self.filename,
            "bytes": self.bytes,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class ResultWrite:
    """What :meth:`JobQueue.write_result` did: ``written`` False when the line already had
    a result (which is kept)."""

    written: bool


@asynccontextmanager
async def _jetstream(action: str) -> AsyncIterator[None]:
    try:
        yield
    except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
        if isinstance(exc, nats.js.errors.NotFoundError):
            raise
        if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
            raise
        raise QueueUnavailable(action, f"{type(exc).__name__}: {exc}") from exc


class JobQueue:
    """A connection to JetStream with the lane's stream, consumers and buckets ensured (see
    the module docstring). Build with :meth:`connect`."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        settings: QueueSettings,
        *,
        batches: KeyValue,
        results: KeyValue,
        files: KeyValue,
        contents: ObjectStore,
    ) -> None:
        self.nc = nc
        self.js = js
        self.settings = settings
        self._batches = batches
        self._results = results
        self._files = files
        self._contents = contents

    @classmethod
    async def connect(cls, settings: QueueSettings) -> JobQueue:
        """Connect (reconnecting forever if the server goes away later) and create the
        stream, consumers and buckets where missing.

        Raises:
            QueueUnavailable: the server did not answer or refused the setup.
        """
        try:
            nc = await nats.connect(
                settings.url,
                connect_timeout=settings.timeout_s,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.2,
                allow_reconnect=True,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise QueueUnavailable("connect", f"{type(exc).__name__}: {exc}") from exc
        try:
            async with _jetstream("create the job stream and buckets"):
                js = nc.jetstream(timeout=settings.timeout_s)
                await js.add_stream(
                    StreamConfig(
                        name=JOB_STREAM,
                        subjects=[f"{JOB_SUBJECT_PREFIX}.>"],
                        retention=RetentionPolicy.WORK_QUEUE,
                        storage=StorageType.FILE,
                        duplicate_window=120.0,
                    )
                )
                for job_class in _CLASSES:
                    await js.add_consumer(
                        JOB_STREAM,
                        ConsumerConfig(
                            durable_name=consumer_name(job_class),
                            filter_subject=f"{JOB_SUBJECT_PREFIX}.{job_class}.>",
                            ack_policy=AckPolicy.EXPLICIT,
                            ack_wait=settings.ack_wait_s,
                            max_deliver=settings.max_deliver,
                            max_ack_pending=10_000,
                        ),
                    )
                batches = await js.create_key_value(
                    KeyValueConfig(bucket=_BATCHES, storage=StorageType.FILE)
                )
                results = await js.create_key_value(
                    KeyValueConfig(
                        bucket=_RESULTS, storage=StorageType.FILE, history=_RESULT_HISTORY
                    )
                )
                files = await js.create_key_value(
                    KeyValueConfig(bucket=_FILES, storage=StorageType.FILE)
                )
                contents = await js.create_object_store(
                    _FILES, config=ObjectStoreConfig(storage=StorageType.FILE)
                )
        except BaseException:
            await nc.close()
            raise
        return cls(
            nc, js, settings, batches=batches, results=results, files=files, contents=contents
        )

    async def close(self) -> None:
        """Drain and close the connection. Idempotent."""
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (TimeoutError, nats.errors.Error):
                await self.nc.close()

    # -- files --------------------------------------------------------------------------------

    async def put_file(self, meta: FileMeta, content: bytes) -> None:
        async with _jetstream("store a file"):
            await self._contents.put(meta.id, content)
            await self._files.put(meta.id, json.dumps(meta.to_json()).encode())

    async def file_meta(self, file_id: str) -> FileMeta | None:
        try:
            async with _jetstream("read a file's metadata"):
                entry = await self._files.get(file_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.NotFoundError):
            return None
        if entry.value is None:
            return None
        return FileMeta(**json.loads(entry.value))

    async def file_content(self, file_id: str) -> bytes:
        async with _jetstream("read a file"):
            found = await self._contents.get(file_id)
        return found.data or b""

    # -- jobs ---------------------------------------------------------------------------------

    async def enqueue(self, job_class: JobClass, job: JobRecord) -> None:
        """Publish ``job`` on its class's subject and return once JetStream stored it. A
        republished job (same batch and line within two minutes) is stored once."""
        async with _jetstream("queue a job"):
            await self.js.publish(
                job_subject(job_class, job.batch_id),
                job.model_dump_json().encode(),
                stream=JOB_STREAM,
                headers={"Nats-Msg-Id": f"{job.batch_id}.{job.line}"},
            )

    async def purge_batch(self, batch_id: str) -> None:
        """Drop the batch's jobs still waiting in the queue (not those being run)."""
        async with _jetstream("purge a batch's jobs"):
            for job_class in _CLASSES:
                await self.js.purge_stream(JOB_STREAM, subject=job_subject(job_class, batch_id))

    async def queued(self) -> int:
        """Jobs in the stream now (waiting or being run, not yet acknowledged)."""
        async with _jetstream("read the job stream"):
            info = await self.js.stream_info(JOB_STREAM)
        return int(info.state.messages)

    # -- batches ------------------------------------------------------------------------------

    async def put_batch(self, record: BatchRecord) -> None:
        async with _jetstream("store a batch"):
            await self._batches.put(record.id, record.model_dump_json().encode())

    async def batch(self, batch_id: str) -> tuple[BatchRecord, int] | None:
        """The stored record and its revision (for :meth:`update_batch`), or None."""
        try:
            async with _jetstream("read a batch"):
                entry = await self._batches.get(batch_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.NotFoundError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return BatchRecord.model_validate_json(entry.value), entry.revision

    async def update_batch(self, record: BatchRecord, revision: int) -> bool:
        """Store ``record`` if the batch is still at ``revision``; False if it moved."""
        try:
            async with _jetstream("update a batch"):
                await self._batches.update(
                    record.id, record.model_dump_json().encode(), last=revision
                )
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    # -- results ------------------------------------------------------------------------------

    async def write_result(self, batch_id: str, result: JobResult) -> ResultWrite:
        """Store ``result`` for its line unless one is there already (first write wins)."""
        try:
            async with _jetstream("store a result"):
                await self._results.create(
                    f"{batch_id}.{result.line}", result.model_dump_json().encode()
                )
        except nats.js.errors.KeyWrongLastSequenceError:
            return ResultWrite(written=False)
        return ResultWrite(written=True)

    async def result(self, batch_id: str, line: int) -> JobResult | None:
        try:
            async with _jetstream("read a result"):
                entry = await self._results.get(f"{batch_id}.{line}")
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.NotFoundError):
            return None
        return None if entry.value is None else JobResult.model_validate_json(entry.value)

    async def result_writes(self, batch_id: str, line: int) -> int:
        """How many times the line's result was written (1 when finished once)."""
        try:
            async with _jetstream("read a result's history"):
                history = await self._results.history(f"{batch_id}.{line}")
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.NotFoundError):
            return 0
        return len(history)

    async def results(self, batch_id: str) -> dict[int, JobResult]:
        """Every result of the batch so far, by line.

        Reads until it has one entry per result key the stream held when the read began.
        The watcher's own "no more pending" marker is not trusted for that: it can come
        before the first entry when the server answers the consumer-info call ahead of
        delivering the messages, which made a finished batch read as unfinished.
        """
        found: dict[int, JobResult] = {}
        async with _jetstream("read a batch's results"):
            info = await self.js.stream_info(
                f"KV_{_RESULTS}", subjects_filter=f"$KV.{_RESULTS}.{batch_id}.*"
            )
            expected = len(info.state.subjects or {})
            if expected == 0:
                return found
            watcher = await self._results.watch(
                f"{batch_id}.*", include_history=False, ignore_deletes=False
            )
            try:
                seen: set[str] = set()
                while len(seen) < expected:
                    entry = await watcher.updates(timeout=self.settings.timeout_s)  # type: ignore[no-untyped-call]
                    if entry is None:
                        continue
                    seen.add(entry.key)
                    if entry.value and entry.operation is None:
                        result = JobResult.model_validate_json(entry.value)
                        found[result.line] = result
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
        return found
