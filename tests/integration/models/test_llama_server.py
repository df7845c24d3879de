"""A real llama.cpp server on the tiny GGUF: OpenAI API answers, streaming, logprobs, stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from tests.integration.models.http import Reply, call
from tiermesh.agents.models import LlamaServer
from tiermesh.agents.supervisor import ProcessState

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

ALIAS = "tiny-local"
HELLO = [{"role": "user", "content": "hello"}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tiny_gguf: Path) -> AsyncIterator[LlamaServer]:
    async with LlamaServer(tiny_gguf, alias=ALIAS, n_ctx=512) as running:
        yield running


async def _chat(server: LlamaServer, **body: object) -> Reply:
    url = f"{server.base_url}/v1/chat/completions"
    return await asyncio.to_thread(call, url, {"messages": HELLO, **body})


async def test_models_lists_the_alias(server: LlamaServer) -> None:
    reply = await asyncio.to_thread(call, f"{server.base_url}/v1/models")
    assert reply.status == 200
    assert [m["id"] for m in reply.json()["data"]] == [ALIAS]
    assert server.status is not None
    assert server.status.state is ProcessState.RUNNING


async def test_chat_completion(server: LlamaServer) -> None:
    reply = await _chat(server, max_tokens=8)
    assert reply.status == 200
    body = reply.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in {"length", "stop"}
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_completion_streams_sse(server: LlamaServer) -> None:
    reply = await _chat(server, max_tokens=6, stream=True)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = reply.events()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) >= 2
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] in {"length", "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


async def test_logprobs(server: LlamaServer) -> None:
    reply = await _chat(server, max_tokens=4, logprobs=True, top_logprobs=2)
    assert reply.status == 200
    steps = reply.json()["choices"][0]["logprobs"]["content"]
    assert steps
    for step in steps:
        assert step["logprob"] <= 0
        # keyed by token text upstream: byte tokens with equal text collapse to one entry
        assert 1 <= len(step["top_logprobs"]) <= 3
        assert all(alt["logprob"] <= 0 for alt in step["top_logprobs"])


async def test_stop_leaves_no_process(tiny_gguf: Path) -> None:
    server = LlamaServer(tiny_gguf, alias="short-lived")
    await server.start()
    pid = server.pid
    assert pid is not None
    log_dir = server.log_path
    assert log_dir is not None
    assert psutil.pid_exists(pid)
    await server.stop()
    assert not psutil.pid_exists(pid)
    assert not log_dir.parent.exists()
    await server.stop()  # idempotent
