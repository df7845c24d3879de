"""A batch worker: takes jobs its tier may run, calls the model, writes each result once.

:class:`BatchWorker` binds to the durable consumers of the job classes its tier may take
(:func:`~tiermesh.controlplane.api.batch.classes_for_tier`, most restricted first) and
pulls one job at a time. For each job it

1. re-checks the recorded sensitivity and allowed tiers against its own tier
   (:func:`~tiermesh.controlplane.api.batch.tier_may_run`); a job it may not run, or one
   that does not parse, is terminated (never redelivered) with a ``tier_refused`` /
   ``malformed_job`` result — the model is never called. Fail closed;
2. skips a job whose batch was cancelled (acknowledged, not run);
3. calls the model (:class:`ModelClient`) while telling JetStream the job is in progress
   (a heartbeat at a third of the ack wait), so a long job is not handed to another
   worker while this one lives, and a dead worker's job is redelivered after the ack wait;
4. writes the result with create-if-absent (:meth:`~.queue.JobQueue.write_result`) and
   only then acknowledges: a worker that dies in between leaves a job that is redelivered
   and whose second result is discarded — every line is finished once.

An unreachable model, or an answer of 429 or 5xx, is retried by redelivery (``nak`` with
a delay) until the consumer's delivery limit; the last attempt's outcome is the result.

**Interactive load first.** With an :class:`InteractiveLoad`, the worker does not pull a
job while the model server has requests in flight other than its own.

Task safety: :meth:`run` is one task on one event loop; :meth:`stop` ends it after the
job in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from tiermesh.agents.batch.queue import JobQueue, consumer_name
from tiermesh.controlplane.api import Tier
from tiermesh.controlplane.api.batch import (
    JOB_STREAM,
    JobRecord,
    JobResult,
    classes_for_tier,
    tier_may_run,
)

__all__ = ["BatchWorker", "HttpModelClient", "InteractiveLoad", "ModelAnswer", "ModelClient"]

log = logging.getLogger("tiermesh.agents.batch")

_RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_IDLE_POLL_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    """A model server's answer: status and JSON body (None when it was not JSON)."""

    status: int
    body: dict[str, Any] | None


class ModelClient(Protocol):
    """Sends one job to a model; raises ``OSError`` or ``aiohttp.ClientError`` when it
    could not (the job is then retried)."""

    async def call(self, job: JobRecord, tier: Tier) -> ModelAnswer: ...


class InteractiveLoad(Protocol):
    """Requests the local model server has in flight now (this worker's own included)."""

    async def in_flight(self) -> int: ...


class HttpModelClient:
    """POSTs a job's body to ``base_url + job.url`` with the job's tenant, sensitivity and
    decision id in ``x-tiermesh-*`` headers (plus ``headers``): the node's Envoy (so
    breakers and fallback apply) or a model server directly. The owner calls :meth:`close`."""

    def __init__(
        self, base_url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 600.0
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def call(self, job: JobRecord, tier: Tier) -> ModelAnswer:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {
            **self._headers,
            "x-tiermesh-tenant": job.tenant,
            "x-tiermesh-sensitivity": job.sensitivity,
            "x-tiermesh-batch-decision-id": job.decision_id,
        }
        async with self._session.post(self._base + job.url, json=job.body, headers=headers) as r:
            raw = await r.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return ModelAnswer(r.status, body if isinstance(body, dict) else None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class BatchWorker:
    """See the module docstring. Does not own the queue, the model client or the load."""

    def __init__(
        self,
        queue: JobQueue,
        tier: Tier,
        model: ModelClient,
        *,
        load: InteractiveLoad | None = None,
        fetch_timeout_s: float = 0.5,
    ) -> None:
        self._queue = queue
        self.tier = tier
        self._model = model
        self._load = load
        self._fetch_timeout = fetch_timeout_s
        self._stopping = asyncio.Event()
        self._running = 0
        self.ran = 0
        """Jobs this worker called the model for."""
        self.refused = 0
        """Jobs it refused to run (tier check or malformed)."""
        self.paused_s = 0.0
        """Seconds it held off pulling because of interactive load."""

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Pull and run jobs until :meth:`stop`."""
        js = self._queue.js
        subs = [
            await js.pull_subscribe_bind(durable=consumer_name(c), stream=JOB_STREAM)
            for c in classes_for_tier(self.tier)
        ]
        try:
            while not self._stopping.is_set():
                await self._wait_for_quiet()
                if self._stopping.is_set():
                    break
                if not await self._pull_one(subs):
                    # nothing anywhere: the fetches already waited
                    continue
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _wait_for_quiet(self) -> None:
        if self._load is None:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not self._stopping.is_set():
            try:
                others = await self._load.in_flight() - self._running
            except (TimeoutError, OSError, aiohttp.ClientError):
                others = 0
            if others <= 0:
                break
            await asyncio.sleep(_IDLE_POLL_S)
        self.paused_s += loop.time() - started

    async def _pull_one(self, subs: list[JetStreamContext.PullSubscription]) -> bool:
        wait = self._fetch_timeout / max(1, len(subs))
        for sub in subs:
            try:
                msgs = await sub.fetch(1, timeout=wait)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("fetching jobs failed: %s", exc)
                await asyncio.sleep(wait)
                continue
            for msg in msgs:
                await self._handle(msg)
            return True
        return False

    async def _handle(self, msg: Msg) -> None:
        attempt = int(msg.metadata.num_delivered or 1)
        try:
            job = JobRecord.model_validate_json(msg.data)
        except ValidationError:
            self.refused += 1
            log.error("malformed job on %s terminated", msg.subject)
            await msg.term()
            return
        if not tier_may_run(self.tier, job.sensitivity, job.allowed_tiers):
            self.refused += 1
            log.error(
                "job %s.%d (%s, tiers %s) refused on a %s worker",
                job.batch_id,
                job.line,
                job.sensitivity,
                ",".join(job.allowed_tiers),
                self.tier,
            )
            await self._queue.write_result(
                job.batch_id,
                JobResult(
                    custom_id=job.custom_id,
                    line=job.line,
                    error={
                        "code": "tier_refused",
                        "message": f"a {job.sensitivity} job may not run on the {self.tier} tier",
                    },
                    tier=self.tier,
                    attempts=attempt,
                ),
            )
            await msg.term()
            return
        found = await self._queue.batch(job.batch_id)
        if found is not None and found[0].cancelled_at is not None:
            await msg.ack()
            return
        if await self._queue.result(job.batch_id, job.line) is not None:
            await msg.ack()  # finished before (a redelivery after the result was written)
            return
        await self._run(msg, job, attempt)

    async def _run(self, msg: Msg, job: JobRecord, attempt: int) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        self._running += 1
        self.ran += 1
        try:
            answer: ModelAnswer | None = await self._model.call(job, self.tier)
            problem = ""
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            answer, problem = None, f"{type(exc).__name__}: {exc}"
        finally:
            self._running -= 1
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        last = attempt >= self._queue.settings.max_deliver
        retry = answer is None or answer.status in _RETRY_STATUSES
        if retry and not last:
            await msg.nak(delay=min(2.0**attempt, 30.0))
            return
        if answer is None:
            result = JobResult(
                custom_id=job.custom_id,
                line=job.line,
                error={"code": "model_unreachable", "message": problem[:500]},
                tier=self.tier,
                attempts=attempt,
            )
        else:
            result = JobResult(
                custom_id=job.custom_id,
                line=job.line,
                status_code=answer.status,
                body=answer.body,
                tier=self.tier,
                attempts=attempt,
            )
        await self._queue.write_result(job.batch_id, result)
        await msg.ack()

    async def _heartbeat(self, msg: Msg) -> None:
        period = self._queue.settings.ack_wait_s / 3
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(nats.errors.Error):
                await msg.in_progress()
