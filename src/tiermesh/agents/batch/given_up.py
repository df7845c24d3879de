"""Jobs JetStream gave up on: :class:`GivenUpJobs`.

A job delivered ``max_deliver`` times without an acknowledgement (its workers died or hung
every time, so none wrote its outcome) is not delivered again, and JetStream announces it
on ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``. :class:`GivenUpJobs`
listens there, reads the job by its stream sequence, writes its line a failed result
(``max_deliveries``; first write wins, so a result written meanwhile is kept) and deletes
the job from the stream, so its batch completes instead of waiting forever.

Advisories are plain NATS messages: one sent while no batch service listens is lost, and
that line stays pending. Every node's service listens; they race harmlessly (the result
is written once, a second delete finds nothing). Task safety: one event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from tiermesh.agents.batch.queue import JobQueue
from tiermesh.controlplane.api.batch import JOB_STREAM, JobRecord, JobResult

__all__ = ["MAX_DELIVERIES_ADVISORY", "GivenUpJobs"]

log = logging.getLogger("tiermesh.agents.batch")

MAX_DELIVERIES_ADVISORY: Final = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOB_STREAM}.*"


class GivenUpJobs:
    """See the module docstring. ``start`` subscribes, ``stop`` unsubscribes; the queue is
    the caller's. :attr:`handled` counts the jobs it failed."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue
        self._sub: Subscription | None = None
        self.handled = 0

    async def start(self) -> None:
        self._sub = await self._queue.nc.subscribe(MAX_DELIVERIES_ADVISORY, cb=self._on_advisory)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries", 0))
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable max-deliveries advisory on %s", msg.subject)
            return
        js = self._queue.js
        try:
            stored = await js.get_msg(JOB_STREAM, seq=seq)
        except (nats.js.errors.Error, nats.errors.Error):
            return  # gone already: another node handled it, or it was purged
        try:
            job = JobRecord.model_validate_json(stored.data or b"")
        except ValidationError:
            log.error("a job given up at stream sequence %d does not parse; deleted", seq)
        else:
            await self._queue.write_result(
                job.batch_id,
                JobResult(
                    custom_id=job.custom_id,
                    line=job.line,
                    error={
                        "code": "max_deliveries",
                        "message": f"no worker finished it in {deliveries} deliveries",
                    },
                    attempts=max(1, deliveries),
                ),
            )
            self.handled += 1
        with contextlib.suppress(nats.js.errors.Error, nats.errors.Error):
            await js.delete_msg(JOB_STREAM, seq)
