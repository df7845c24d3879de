"""A job no worker finishes within its delivery limit fails its line, so the batch
completes (real nats-server; a consumer that takes the job and never answers)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator

import nats.errors
import pytest

from tests.integration.batch.support import chat_line, jsonl, real_decider
from tiermesh.agents.batch import BatchService, GivenUpJobs, JobQueue, QueueSettings
from tiermesh.agents.batch.queue import consumer_name
from tiermesh.controlplane.api.batch import JOB_STREAM
from tiermesh.procs.nats import NatsServer

pytestmark = pytest.mark.skipif(
    shutil.which("nats-server") is None, reason="nats-server is not installed"
)

ACK_WAIT_S = 1.0


@pytest.fixture
async def queue() -> AsyncIterator[JobQueue]:
    with NatsServer() as server:
        q = await JobQueue.connect(
            QueueSettings(url=server.url, ack_wait_s=ACK_WAIT_S, max_deliver=2)
        )
        yield q
        await q.close()


async def test_a_job_delivered_to_the_limit_without_an_outcome_fails_its_line(
    queue: JobQueue,
) -> None:
    decider, _, engine = real_decider()
    watch = GivenUpJobs(queue)
    await watch.start()
    try:
        service = BatchService(queue, decider)
        file = await service.create_file("acme", jsonl([chat_line("lost", "hi")]), filename="f")
        view = await service.create_batch(
            "acme", input_file_id=file.id, endpoint="/v1/chat/completions", declared="public"
        )
        # a worker that takes the job and dies silently, every time, and keeps asking
        sub = await queue.js.pull_subscribe_bind(durable=consumer_name("cloud"), stream=JOB_STREAM)
        taken = 0
        try:
            deadline = time.monotonic() + 20
            while (await service.batch("acme", view.record.id)).status != "completed":
                assert time.monotonic() < deadline, "the given-up job never failed its line"
                try:
                    taken += len(await sub.fetch(1, timeout=ACK_WAIT_S / 2))
                except nats.errors.TimeoutError:
                    continue
        finally:
            await sub.unsubscribe()
        assert taken == 2
    finally:
        await watch.stop()
        engine.close()
    view = await service.batch("acme", view.record.id)
    assert view.counts.model_dump() == {"total": 1, "completed": 0, "failed": 1}
    errors = await service.file_content("acme", f"file-{view.record.id}-errors")
    (row,) = [json.loads(line) for line in errors.decode().splitlines()]
    assert row["error"]["code"] == "max_deliveries"
    assert watch.handled == 1
    assert await queue.queued() == 0
