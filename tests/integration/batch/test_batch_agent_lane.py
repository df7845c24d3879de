"""The agent's batch lane (what ``batch:`` in node.yaml starts) with a real nats-server,
and a worker that yields to the model server's interactive requests."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.batch.support import ROOT, ModelStandin, chat_line, jsonl, real_decider
from tiermesh.agents.batch import (
    BatchService,
    BatchWorker,
    HttpModelClient,
    JobQueue,
    QueueSettings,
)
from tiermesh.agents.config import AgentConfig
from tiermesh.agents.runtime.batch import BatchLane, ModelServerLoad
from tiermesh.agents.usage import Prices, UsageLedger
from tiermesh.controlplane.api import load_catalog
from tiermesh.procs.nats import NatsServer

pytestmark = pytest.mark.skipif(
    shutil.which("nats-server") is None, reason="nats-server is not installed"
)

HEADERS = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


@pytest.fixture
def standin() -> Iterator[ModelStandin]:
    model = ModelStandin()
    yield model
    model.close()


def _config(state: Path, nats_url: str, model_url: str) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "node": {"id": "private-1", "tier": "private"},
            "control_plane": {
                "trust_domain": "td.test",
                "ads": ["127.0.0.1:1"],
                "node_api": ["127.0.0.1:2"],
                "join": ["127.0.0.1:3"],
            },
            "identity": {"state_dir": str(state)},
            "model_server": {"kind": "none"},
            "batch": {"nats_url": nats_url, "model_url": model_url, "ack_wait_s": 2},
        }
    )


async def _charged(ledger: UsageLedger, tenant: str, tokens: int) -> None:
    """The worker charges after writing a result, a moment after the batch shows done."""
    for _ in range(100):  # at most ~5 s
        if ledger.totals(tenant).tokens >= tokens:
            break
        await asyncio.sleep(0.05)
    assert ledger.totals(tenant).tokens == tokens


async def test_the_lane_serves_on_its_socket_and_its_worker_runs_the_nodes_tier(
    tmp_path: Path, nats_server: NatsServer, standin: ModelStandin
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    config = _config(state, nats_server.url, standin.url)
    assert config.batch is not None
    decider, sink, engine = real_decider()
    lane = BatchLane(config, config.batch)
    catalog = load_catalog(ROOT / "policies" / "data" / "catalog.yaml")  # acme: private too
    ledger = UsageLedger(tmp_path / "budget.json", Prices.from_catalog(catalog))
    await lane.start(decider.authorizer, lambda: catalog, ledger=ledger)
    try:
        assert lane.socket == state / "batch.sock"
        assert stat.S_IMODE(lane.socket.stat().st_mode) == 0o600
        lane.start_worker()
        assert lane.worker is not None
        assert lane.worker.tier == "private"
        lines = [chat_line("a", "plain question"), chat_line("b", "mail jane.doe@example.com")]
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(lane.socket))
        ) as session:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", jsonl(lines), filename="in.jsonl")
            async with session.post("http://b/v1/files", data=form, headers=HEADERS) as r:
                file = await r.json()
            body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions"}
            async with session.post("http://b/v1/batches", json=body, headers=HEADERS) as r:
                batch = await r.json()
            deadline = time.monotonic() + 20
            while batch["status"] != "completed" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                async with session.get(f"http://b/v1/batches/{batch['id']}", headers=HEADERS) as r:
                    batch = await r.json()
        assert batch["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
        # the restricted line ran here: a private worker may take on-prem jobs
        assert standin.seen["mail jane.doe@example.com"] == 1
        assert len(sink.entries) == 2
        # Each answered line is charged to its tenant once, like an interactive answer
        # (the stand-in reports one completion token per answer).
        await _charged(ledger, "acme", 2)
        assert ledger.totals("globex").tokens == 0
    finally:
        await lane.stop()
        engine.close()
    assert not lane.socket.exists()


async def test_a_worker_pulls_no_job_while_interactive_requests_are_in_flight(
    nats_server: NatsServer, standin: ModelStandin
) -> None:
    decider, _, engine = real_decider()
    queue = await JobQueue.connect(QueueSettings(url=nats_server.url, ack_wait_s=5))
    load = ModelServerLoad(standin.url)
    model = HttpModelClient(standin.url)
    standin.delays["interactive"] = 2.0
    interactive = threading.Thread(target=_interactive_request, args=(standin.url,))
    try:
        service = BatchService(queue, decider)
        file = await service.create_file("acme", jsonl([chat_line("j", "batch job")]), filename="f")
        await service.create_batch(
            "acme", input_file_id=file.id, endpoint="/v1/chat/completions", declared="public"
        )
        interactive.start()
        await _poll(lambda: standin.in_flight > 0, 5)
        worker = BatchWorker(queue, "local", model, load=load, fetch_timeout_s=0.2)
        started = time.monotonic()
        task = asyncio.create_task(worker.run())
        await _poll(lambda: standin.seen["batch job"] > 0, 15)
        waited = time.monotonic() - started
        worker.stop()
        await asyncio.wait_for(task, 10)
    finally:
        interactive.join(timeout=10)
        await model.close()
        await load.close()
        await queue.close()
        engine.close()
    assert standin.seen["batch job"] == 1
    assert waited > 1.0  # it waited for the interactive request (2 s) to finish
    assert worker.paused_s > 1.0


async def _poll(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _interactive_request(url: str) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "interactive"}]}).encode()
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
