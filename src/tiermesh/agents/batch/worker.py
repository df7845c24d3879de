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
   and whose second result is discarded — every line is finished once;
5. charges the job's tenant for the answer's ``usage`` (:data:`Charge`) when its result
   was the one written, so a line is charged at most once, like an interactive answer on
   the node's usage ledger. A worker that dies between the write and the charge leaves
   that one line uncharged (never charged twice).

An unreachable model, or an answer of 429 or 5xx, is retried by redelivery (``nak`` with
a delay) until the consumer's delivery limit; the last attempt's outcome is the result.
A job whose every delivery died with its worker is failed by
:class:`~tiermesh.agents.batch.GivenUpJobs`.

**Interactive load first.** With an :class:`InteractiveLoad`, the worker pulls a job only
once the model server has been free of interactive work for ``quiet_s``: no request in
flight but its own, and no completion tokens generated but its own jobs' (so requests
that start and end between two looks are seen too). The model server answers one request
at a time, so an interactive request that arrives while a job runs waits for that job;
the quiet window keeps jobs out of an interactive session's gaps.

**Pulling.** Most restricted class first; a class with jobs waiting (the consumer's
``num_pending``) is fetched at once, and when none has any, each is waited on in turn for
a share of ``fetch_timeout_s`` (that is how a redelivery is picked up).

Task safety: :meth:`run` is one task on one event loop; :meth:`stop` ends it after the
job in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
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
from tiermesh.tasks import cancel_and_wait

__all__ = [
    "BatchWorker",
    "HttpModelClient",
    "InteractiveLoad",
    "LoadSample",
    "ModelAnswer",
    "ModelClient",
]

log = logging.getLogger("tiermesh.agents.batch")

_RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_CONFIRM_S: Final = 0.01
_IDLE_POLL_S: Final = 0.1
"""Between two looks at the model server's load while holding off (each look is a request
the model server answers too)."""


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    """A model server's answer: status and JSON body (None when it was not JSON)."""

    status: int
    body: dict[str, Any] | None


class ModelClient(Protocol):
    """Sends one job to a model; raises ``OSError`` or ``aiohttp.ClientError`` when it
    could not (the job is then retried)."""

    async def call(self, job: JobRecord, tier: Tier) -> ModelAnswer: ...


@dataclass(frozen=True, slots=True)
class LoadSample:
    """What the local model server reports now: requests in flight and completion tokens
    generated since it started (this worker's own included in both)."""

    in_flight: int
    completion_tokens_total: int


class InteractiveLoad(Protocol):
    """The local model server's load; raises ``OSError``/``aiohttp.ClientError`` or returns
    None when it cannot tell (the worker then does not hold back)."""

    async def sample(self) -> LoadSample | None: ...


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


Charge = Callable[[JobRecord, int, int], Awaitable[None]]
"""Charge a job's tenant for ``(prompt_tokens, completion_tokens)`` of its answer."""


def _tokens(usage: object, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and value >= 0 else 0


class BatchWorker:
    """See the module docstring. Does not own the queue, the model client or the load."""

    def __init__(
        self,
        queue: JobQueue,
        tier: Tier,
        model: ModelClient,
        *,
        load: InteractiveLoad | None = None,
        quiet_s: float = 0.5,
        fetch_timeout_s: float = 0.5,
        charge: Charge | None = None,
    ) -> None:
        self._queue = queue
        self._charge = charge
        self.tier = tier
        self._model = model
        self._load = load
        self._quiet_s = quiet_s
        self._fetch_timeout = fetch_timeout_s
        self._own_tokens = 0
        """Completion tokens of this worker's own answers, since it started."""
        self._baseline: int | None = None
        self._others_max = 0
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
            (
                consumer_name(c),
                await js.pull_subscribe_bind(durable=consumer_name(c), stream=JOB_STREAM),
            )
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
            for _, sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _sample(self) -> LoadSample | None:
        assert self._load is not None
        try:
            return await self._load.sample()
        except (TimeoutError, OSError, aiohttp.ClientError):
            return None

    async def _interactive_now(self) -> bool:
        """Whether the model server shows interactive work since the last look.

        Two signals, each safe against the server finishing its bookkeeping of this
        worker's own answer a moment after the worker has it: requests in flight beyond
        the worker's own, seen on two looks :data:`_CONFIRM_S` apart; and completion
        tokens beyond its own answers' since it started, counted only when that total
        exceeds its highest value so far (the server may count an own answer late)."""
        sample = await self._sample()
        if sample is None:
            return False
        if sample.in_flight > self._running:
            await asyncio.sleep(_CONFIRM_S)
            again = await self._sample()
            if again is not None and again.in_flight > self._running:
                return True
            sample = again or sample
        if self._baseline is None:
            self._baseline = sample.completion_tokens_total
            return False
        others = sample.completion_tokens_total - self._baseline - self._own_tokens
        if others > self._others_max:
            self._others_max = others
            return True
        return False

    async def _wait_for_quiet(self) -> None:
        if self._load is None:
            return
        loop = asyncio.get_running_loop()
        started = quiet_since = loop.time()
        seen = False
        while not self._stopping.is_set():
            if await self._interactive_now():
                seen, quiet_since = True, loop.time()
            elif not seen or loop.time() - quiet_since >= self._quiet_s:
                break
            await asyncio.sleep(_IDLE_POLL_S)
        self.paused_s += loop.time() - started

    async def _pull_one(self, subs: list[tuple[str, JetStreamContext.PullSubscription]]) -> bool:
        js = self._queue.js
        for name, sub in subs:
            try:
                info = await js.consumer_info(JOB_STREAM, name)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("reading consumer %s failed: %s", name, exc)
                continue
            if info.num_pending and await self._fetch(sub, self._fetch_timeout):
                return True
        wait = self._fetch_timeout / max(1, len(subs))
        for _, sub in subs:
            if await self._fetch(sub, wait):
                return True
        return False

    async def _fetch(self, sub: JetStreamContext.PullSubscription, wait_s: float) -> bool:
        try:
            msgs = await sub.fetch(1, timeout=wait_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return False
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            log.warning("fetching jobs failed: %s", exc)
            await asyncio.sleep(wait_s)
            return False
        for msg in msgs:
            await self._handle(msg)
        return bool(msgs)

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
            await cancel_and_wait([heartbeat])
        if answer is not None and answer.body is not None:
            usage = answer.body.get("usage")
            tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
            self._own_tokens += tokens if isinstance(tokens, int) else 0
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
        written = await self._queue.write_result(job.batch_id, result)
        if written.written and self._charge is not None and answer is not None:
            usage = None if answer.body is None else answer.body.get("usage")
            prompt, completion = (
                _tokens(usage, "prompt_tokens"),
                _tokens(usage, "completion_tokens"),
            )
            if prompt or completion:
                try:
                    await self._charge(job, prompt, completion)
                except Exception:  # a ledger that cannot write must not lose the result
                    log.exception("batch line %s.%d not charged", job.batch_id, job.line)
        await msg.ack()

    async def _heartbeat(self, msg: Msg) -> None:
        period = self._queue.settings.ack_wait_s / 3
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(nats.errors.Error):
                await msg.in_progress()
