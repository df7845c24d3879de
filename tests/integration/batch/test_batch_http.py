"""``/v1/files`` and ``/v1/batches`` over the service's 0600 Unix socket, with a real
nats-server, the shipped request policy and a worker."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.batch.support import ModelStandin, chat_line, jsonl, real_decider
from tiermesh.agents.batch import (
    BatchHttpServer,
    BatchService,
    BatchWorker,
    HttpModelClient,
    JobQueue,
    QueueSettings,
)
from tiermesh.procs.nats import NatsServer

pytestmark = pytest.mark.skipif(
    shutil.which("nats-server") is None, reason="nats-server is not installed"
)

TENANT_HEADERS = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}


@pytest.fixture
def standin() -> Iterator[ModelStandin]:
    model = ModelStandin()
    yield model
    model.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[aiohttp.ClientSession, JobQueue, Path]]:
    decider, _, engine = real_decider()
    with NatsServer() as nats_server:
        queue = await JobQueue.connect(QueueSettings(url=nats_server.url, ack_wait_s=2.0))
        socket_path = tmp_path / "batch.sock"
        server = BatchHttpServer(
            BatchService(queue, decider), socket_path, max_upload_bytes=1 << 20
        )
        await server.start()
        session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path)))
        try:
            yield session, queue, socket_path
        finally:
            await session.close()
            await server.stop()
            await queue.close()
            engine.close()


async def _upload(session: aiohttp.ClientSession, content: bytes) -> dict[str, object]:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", content, filename="in.jsonl", content_type="application/jsonl")
    async with session.post("http://batch/v1/files", data=form, headers=TENANT_HEADERS) as r:
        assert r.status == 200, await r.text()
        found: dict[str, object] = await r.json()
    return found


async def test_upload_submit_poll_fetch_over_the_unix_socket(
    api: tuple[aiohttp.ClientSession, JobQueue, Path], standin: ModelStandin
) -> None:
    session, queue, socket_path = api
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    file = await _upload(session, jsonl([chat_line(f"h-{i}", f"ask {i}") for i in range(3)]))
    assert file["object"] == "file"
    assert "tenant" not in file
    request = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions"}
    async with session.post("http://batch/v1/batches", json=request, headers=TENANT_HEADERS) as r:
        assert r.status == 200, await r.text()
        batch = await r.json()
    assert batch["status"] == "in_progress"
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    model = HttpModelClient(standin.url)
    worker = BatchWorker(queue, "local", model, fetch_timeout_s=0.3)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with session.get(
                f"http://batch/v1/batches/{batch['id']}", headers=TENANT_HEADERS
            ) as r:
                batch = await r.json()
            if batch["status"] == "completed":
                break
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await model.close()
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    async with session.get(
        f"http://batch/v1/files/{batch['output_file_id']}/content", headers=TENANT_HEADERS
    ) as r:
        assert r.status == 200
        rows = [json.loads(line) for line in (await r.text()).splitlines()]
    assert [row["custom_id"] for row in rows] == ["h-0", "h-1", "h-2"]
    assert all(row["response"]["status_code"] == 200 for row in rows)
    async with session.post(
        f"http://batch/v1/batches/{batch['id']}/cancel", headers=TENANT_HEADERS
    ) as r:
        assert r.status == 409
        assert (await r.json())["error"]["type"] == "invalid_state"
    other = {"x-tiermesh-tenant": "globex"}
    async with session.get(f"http://batch/v1/batches/{batch['id']}", headers=other) as r:
        assert r.status == 404


@pytest.mark.parametrize(
    ("headers", "body", "status", "param"),
    [
        ({}, {"input_file_id": "f", "endpoint": "/v1/chat/completions"}, 401, None),
        (TENANT_HEADERS, {"endpoint": "/v1/chat/completions"}, 400, "input_file_id"),
        (TENANT_HEADERS, {"input_file_id": "f", "endpoint": "/v1/models"}, 400, "endpoint"),
        (TENANT_HEADERS, {"input_file_id": "f", "endpoint": "/v1/chat/completions"}, 404, None),
    ],
)
async def test_bad_requests_are_answered_with_the_problem(
    api: tuple[aiohttp.ClientSession, JobQueue, Path],
    headers: dict[str, str],
    body: dict[str, str],
    status: int,
    param: str | None,
) -> None:
    session = api[0]
    async with session.post("http://batch/v1/batches", json=body, headers=headers) as r:
        assert r.status == status
        error = (await r.json())["error"]
    assert error["param"] == param
    assert error["message"]


async def test_a_malformed_line_is_refused_naming_it_and_nothing_is_queued(
    api: tuple[aiohttp.ClientSession, JobQueue, Path],
) -> None:
    session, queue, _ = api
    content = jsonl([chat_line("a", "fine")]) + b'{"custom_id": "b"}\n'
    file = await _upload(session, content)
    request = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions"}
    async with session.post("http://batch/v1/batches", json=request, headers=TENANT_HEADERS) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["param"] == "line 2"
    assert "missing 'method'" in error["message"]
    assert await queue.queued() == 0
