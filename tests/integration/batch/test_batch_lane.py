"""The batch lane against a real nats-server (JetStream, file store) and the shipped
request policy: submit → queue → tier-restricted workers → results, cancel, audit, a
worker killed mid-job, the queue server restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from tests.integration.batch.support import (
    ModelStandin,
    acme_tiers,
    chat_line,
    jsonl,
    real_decider,
    start_worker_process,
)
from tiermesh.agents.authz import MemorySink
from tiermesh.agents.batch import (
    CATALOG_DEFAULTS,
    BatchService,
    BatchWorker,
    HttpModelClient,
    InvalidBatchInput,
    JobQueue,
    QueueSettings,
    output_file_id,
)
from tiermesh.agents.batch.worker import Charge
from tiermesh.controlplane.api import Tier
from tiermesh.controlplane.api.batch import JobRecord, JobResult, job_subject
from tiermesh.procs.nats import NatsServer

pytestmark = pytest.mark.skipif(
    shutil.which("nats-server") is None, reason="nats-server is not installed"
)

ACK_WAIT_S = 1.5
TENANT = "acme"
EMAIL_TEXT = "write to jane.doe@example.com about her order"


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


@pytest.fixture
def standin() -> Iterator[ModelStandin]:
    model = ModelStandin()
    yield model
    model.close()


@pytest.fixture
async def queue(nats_server: NatsServer) -> AsyncIterator[JobQueue]:
    q = await JobQueue.connect(QueueSettings(url=nats_server.url, ack_wait_s=ACK_WAIT_S))
    yield q
    await q.close()


@pytest.fixture
def decided() -> Iterator[tuple[object, MemorySink]]:
    decider, sink, engine = real_decider()
    yield decider, sink
    engine.close()


@pytest.fixture
def service(queue: JobQueue, decided: tuple[object, MemorySink]) -> BatchService:
    return BatchService(queue, decided[0], tenant_tiers=acme_tiers)  # type: ignore[arg-type]


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@contextlib.asynccontextmanager
async def running_worker(
    queue: JobQueue, tier: Tier, upstream: str, charge: Charge | None = None
) -> AsyncIterator[BatchWorker]:
    model = HttpModelClient(upstream)
    worker = BatchWorker(queue, tier, model, fetch_timeout_s=0.3, charge=charge)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=10)
        await model.close()


async def submit(service: BatchService, lines: list[dict[str, object]], declared: str) -> str:
    file = await service.create_file(TENANT, jsonl(lines), filename="in.jsonl")
    view = await service.create_batch(
        TENANT, input_file_id=file.id, endpoint="/v1/chat/completions", declared=declared
    )
    return view.record.id


async def finished(service: BatchService, batch_id: str) -> bool:
    view = await service.batch(TENANT, batch_id)
    return view.status in ("completed", "cancelled")


async def test_batch_runs_and_results_are_fetched_with_one_audited_decision_per_line(
    service: BatchService,
    queue: JobQueue,
    standin: ModelStandin,
    decided: tuple[object, MemorySink],
) -> None:
    lines = [chat_line(f"req-{i}", f"question {i}") for i in range(5)]
    batch_id = await submit(service, lines, "public")
    sink = decided[1]
    assert len(sink.entries) == 5  # each line decided and recorded before it was queued
    assert {e.result["sensitivity"] for e in sink.entries} == {"public"}
    assert {e.input["tenant"] for e in sink.entries} == {TENANT}
    async with running_worker(queue, "cloud", standin.url):
        await until(lambda: finished(service, batch_id), 20, "the batch to complete")
    view = await service.batch(TENANT, batch_id)
    assert view.status == "completed"
    assert view.counts.model_dump() == {"total": 5, "completed": 5, "failed": 0}
    output = await service.file_content(TENANT, output_file_id(batch_id))
    rows = [json.loads(line) for line in output.decode().splitlines()]
    assert [r["custom_id"] for r in rows] == [f"req-{i}" for i in range(5)]
    assert rows[3]["response"]["body"]["choices"][0]["message"]["content"] == "re question 3"
    assert standin.seen == {f"question {i}": 1 for i in range(5)}
    decision_ids = {str(e.decision_id) for e in sink.entries}
    sent = {h["x-tiermesh-batch-decision-id"] for h in standin.headers}
    assert sent == decision_ids
    # another tenant sees nothing of it
    with pytest.raises(Exception, match="no batch"):
        await service.batch("globex", batch_id)


async def test_each_answered_line_is_charged_to_its_tenant_once(
    service: BatchService, queue: JobQueue, standin: ModelStandin
) -> None:
    """A line whose result another worker already wrote (a redelivery) is not charged
    again; every other answered line is charged once, with its answer's tokens."""
    charged: list[tuple[str, str, int, int]] = []

    async def charge(job: JobRecord, prompt: int, completion: int) -> None:
        charged.append((job.tenant, job.custom_id, prompt, completion))

    batch_id = await submit(service, [chat_line(f"c-{i}", f"ask {i}") for i in range(3)], "public")
    already = JobResult(custom_id="c-1", line=1, status_code=200, body={}, tier="cloud")
    assert (await queue.write_result(batch_id, already)).written
    async with running_worker(queue, "cloud", standin.url, charge):
        await until(lambda: finished(service, batch_id), 20, "the batch to complete")
    assert sorted(charged) == [(TENANT, "c-0", 0, 1), (TENANT, "c-2", 0, 1)]


async def test_a_restricted_job_is_never_run_by_a_cloud_worker(
    service: BatchService,
    queue: JobQueue,
    standin: ModelStandin,
    decided: tuple[object, MemorySink],
) -> None:
    lines = [chat_line("public-0", "hello there"), chat_line("pii-1", EMAIL_TEXT)]
    batch_id = await submit(service, lines, "public")
    labels = {e.result["sensitivity"] for e in decided[1].entries}
    assert labels == {"public", "restricted"}  # the line with an e-mail address: floor
    # a forged restricted job published straight onto the cloud subject
    forged = JobRecord(
        batch_id=batch_id,
        line=7,
        custom_id="forged",
        url="/v1/chat/completions",
        body={"messages": [{"role": "user", "content": "forged restricted"}]},
        tenant=TENANT,
        sensitivity="restricted",
        allowed_tiers=("local", "private", "cloud"),
        decision_id="none",
    )
    await queue.js.publish(job_subject("cloud", batch_id), forged.model_dump_json().encode())
    async with running_worker(queue, "cloud", standin.url) as cloud:
        await until(lambda: _has_result(queue, batch_id, 0, 7), 20, "the cloud worker's public job")
        await asyncio.sleep(ACK_WAIT_S * 2)  # time enough for any redelivery
    assert standin.seen == {"hello there": 1}  # neither restricted job reached the model
    assert cloud.refused == 1
    refused = await queue.result(batch_id, 7)
    assert refused is not None
    assert refused.error is not None
    assert refused.error["code"] == "tier_refused"
    assert await queue.result(batch_id, 1) is None  # still queued for an on-prem worker
    assert (await service.batch(TENANT, batch_id)).status == "in_progress"
    async with running_worker(queue, "private", standin.url) as private:
        await until(lambda: finished(service, batch_id), 20, "the private worker")
    assert private.ran == 1
    assert standin.seen[EMAIL_TEXT] == 1
    pii = await queue.result(batch_id, 1)
    assert pii is not None
    assert pii.tier == "private"
    assert pii.succeeded


async def test_a_tenants_restricted_lines_run_only_on_the_tiers_its_catalog_entry_allows(
    queue: JobQueue, standin: ModelStandin, decided: tuple[object, MemorySink]
) -> None:
    # the catalog's default for restricted data: the local tier only (no private GPU)
    service = BatchService(queue, decided[0], tenant_tiers=CATALOG_DEFAULTS)  # type: ignore[arg-type]
    batch_id = await submit(service, [chat_line("pii-0", EMAIL_TEXT)], "public")
    async with running_worker(queue, "private", standin.url):
        await asyncio.sleep(ACK_WAIT_S * 2)
    assert standin.seen == {}
    assert await queue.result(batch_id, 0) is None
    async with running_worker(queue, "local", standin.url) as local:
        await until(lambda: finished(service, batch_id), 20, "the local worker")
    assert local.ran == 1
    result = await queue.result(batch_id, 0)
    assert result is not None
    assert result.tier == "local"


async def _has_result(queue: JobQueue, batch_id: str, *lines: int) -> bool:
    return all([await queue.result(batch_id, line) is not None for line in lines])


async def test_a_cancelled_batch_runs_no_more_jobs(
    service: BatchService, queue: JobQueue, standin: ModelStandin
) -> None:
    standin.delay_s = 1.0
    batch_id = await submit(service, [chat_line(f"c-{i}", f"job {i}") for i in range(6)], "public")
    async with running_worker(queue, "local", standin.url):
        await until(lambda: _async(_count(standin) >= 1), 10, "the first job to start")
        view = await service.cancel(TENANT, batch_id)
        assert view.status in ("cancelling", "cancelled")
        await asyncio.sleep(ACK_WAIT_S * 2)
    assert await queue.queued() == 0
    assert _count(standin) == 1  # the job in hand when it was cancelled, no other
    view = await service.batch(TENANT, batch_id)
    assert view.status == "cancelled"
    assert view.counts.total == 6
    assert view.counts.completed + view.counts.failed == 6
    errors = await service.file_content(TENANT, f"file-{batch_id}-errors")
    codes = [json.loads(line)["error"]["code"] for line in errors.decode().splitlines()]
    assert codes.count("batch_cancelled") >= 5
    with pytest.raises(InvalidBatchInput):
        await service.create_batch(TENANT, input_file_id="x", endpoint="/v1/other")


def _count(standin: ModelStandin) -> int:
    return sum(standin.seen.values())


async def test_a_worker_killed_mid_job_is_redelivered_and_the_job_finishes_once(
    service: BatchService, queue: JobQueue, standin: ModelStandin, nats_server: NatsServer
) -> None:
    standin.delay_s = 30.0  # the first worker is killed while the model is answering
    batch_id = await submit(service, [chat_line("slow-0", "long analysis")], "public")
    child = start_worker_process(nats_server.url, "local", standin.url, ACK_WAIT_S)
    try:
        await until(lambda: _async(_count(standin) == 1), 30, "the child worker's call")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
    assert await queue.result(batch_id, 0) is None
    standin.delay_s = 0.0
    async with running_worker(queue, "local", standin.url):
        await until(lambda: finished(service, batch_id), 30, "the redelivered job")
        await asyncio.sleep(ACK_WAIT_S * 2)  # no third delivery
    assert standin.seen["long analysis"] == 2  # the killed attempt and the redelivery
    result = await queue.result(batch_id, 0)
    assert result is not None
    assert result.succeeded
    assert result.attempts == 2
    assert await queue.result_writes(batch_id, 0) == 1
    assert await queue.queued() == 0
    view = await service.batch(TENANT, batch_id)
    assert view.counts.model_dump() == {"total": 1, "completed": 1, "failed": 0}


async def _async(value: bool) -> bool:
    return value


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_no_accepted_job_is_lost_when_the_queue_server_restarts(
    nats_server: NatsServer,
    standin: ModelStandin,
    decided: tuple[object, MemorySink],
    kill: bool,
) -> None:
    settings = QueueSettings(url=nats_server.url, ack_wait_s=ACK_WAIT_S)
    first = await JobQueue.connect(settings)
    service = BatchService(first, decided[0], tenant_tiers=acme_tiers)  # type: ignore[arg-type]
    lines = [chat_line(f"r-{i}", f"item {i}") for i in range(20)]
    batch_id = await submit(service, lines, "public")
    await first.close()
    nats_server.restart(kill=kill)
    second = await JobQueue.connect(settings)
    try:
        assert await second.queued() == 20
        service = BatchService(second, decided[0], tenant_tiers=acme_tiers)  # type: ignore[arg-type]
        async with running_worker(second, "cloud", standin.url):
            await until(lambda: finished(service, batch_id), 30, "every job after the restart")
        view = await service.batch(TENANT, batch_id)
        assert view.counts.model_dump() == {"total": 20, "completed": 20, "failed": 0}
        assert standin.seen == {f"item {i}": 1 for i in range(20)}
    finally:
        await second.close()


async def test_results_are_read_whole_when_the_watch_signals_done_before_its_first_entry(
    queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KV watcher puts its "nothing pending" marker first when the server answers the
    consumer-info call before it delivers the messages; a finished batch then read as
    having no results (and a cancel of it was accepted). Force that order."""
    for line in range(3):
        result = JobResult(custom_id=f"c-{line}", line=line, status_code=200, body={"ok": line})
        assert (await queue.write_result("b-early", result)).written
    watch = queue._results.watch

    async def marker_first(*args: object, **kwargs: object) -> object:
        watcher = await watch(*args, **kwargs)
        await watcher._updates.put(None)
        return watcher

    monkeypatch.setattr(queue._results, "watch", marker_first)
    found = await queue.results("b-early")
    assert sorted(found) == [0, 1, 2]
    assert found[1].body == {"ok": 1}
    assert await queue.results("b-none") == {}
