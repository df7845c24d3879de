"""The served app's additions on a real llama.cpp server (the tiny GGUF): the usage chunk
of a stream that asks for it, ``/tiermesh/load`` while requests queue, the body untouched.

Chunks vs tokens, measured on the tiny model (one token per byte), 24 tokens, seeds 8-15:
a content chunk is one token in most answers, but not always. llama-cpp-python sends the
shortest run of tokens that decodes as UTF-8 as one chunk, so a character of two bytes is
one chunk of two tokens (seed 11: 23 content chunks for 24 tokens, "Փ" in one chunk);
tokens that never decode (a stray continuation byte) are held and flushed at the end one
chunk per token, as empty deltas (3 to 18 of 24 here). Chunk counting is thus not exact in
general (and the tokens of a stop sequence are never sent at all), so the server counts
tokens where llama.cpp generates them (`tiermesh.agents.models.generation`). For this model
the exact relation is: tokens = sum over content chunks of max(1, UTF-8 bytes of delta).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.integration.models.http import Reply, call
from tiermesh.agents.models import LlamaServer
from tiermesh.agents.models.load import LoadReport

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

HELLO = [{"role": "user", "content": "hello"}]
WITH_USAGE = {"stream": True, "stream_options": {"include_usage": True}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tiny_gguf: Path) -> AsyncIterator[LlamaServer]:
    async with LlamaServer(tiny_gguf, alias="tiny-load", n_ctx=2048) as running:
        yield running


async def _post(server: LlamaServer, path: str, body: dict[str, Any]) -> Reply:
    reply = await asyncio.to_thread(call, f"{server.base_url}{path}", body)
    assert reply.status == 200, reply.body[:500]
    return reply


def _chunks(reply: Reply) -> list[dict[str, Any]]:
    events = reply.events()
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


async def _load(server: LlamaServer) -> LoadReport:
    report = await server.read_load()
    assert report is not None
    return report


async def test_stream_that_asks_gets_a_usage_chunk_matching_the_json_answer(
    server: LlamaServer,
) -> None:
    body = {"messages": HELLO, "max_tokens": 24, "seed": 11}
    answer = (await _post(server, "/v1/chat/completions", body)).json()
    chunks = _chunks(await _post(server, "/v1/chat/completions", {**body, **WITH_USAGE}))

    *answer_chunks, usage_chunk = chunks
    assert "usage" not in answer_chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["object"] == "chat.completion.chunk"
    first = answer_chunks[0]
    assert (usage_chunk["id"], usage_chunk["created"], usage_chunk["model"]) == (
        first["id"],
        first["created"],
        first["model"],
    )
    usage = usage_chunk["usage"]
    assert usage == answer["usage"]
    assert usage["prompt_tokens"] > 0
    deltas = [c["choices"][0]["delta"] for c in answer_chunks]
    content = [d["content"].encode() for d in deltas if "content" in d]
    assert usage["completion_tokens"] == sum(max(1, len(c)) for c in content)
    assert len(content) <= usage["completion_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("seed", [8, 11, 13])
async def test_streamed_usage_equals_the_json_usage(server: LlamaServer, seed: int) -> None:
    body = {"messages": HELLO, "max_tokens": 24, "seed": seed}
    answer = (await _post(server, "/v1/chat/completions", body)).json()
    chunks = _chunks(await _post(server, "/v1/chat/completions", {**body, **WITH_USAGE}))
    assert chunks[-1]["usage"] == answer["usage"]


async def test_prompt_tokens_follow_the_messages(server: LlamaServer) -> None:
    longer = [{"role": "system", "content": "be brief"}, *HELLO]
    body = {"messages": longer, "max_tokens": 4, "seed": 3}
    answer = (await _post(server, "/v1/chat/completions", body)).json()
    chunks = _chunks(await _post(server, "/v1/chat/completions", {**body, **WITH_USAGE}))
    short = _chunks(
        await _post(server, "/v1/chat/completions", {**body, "messages": HELLO, **WITH_USAGE})
    )
    assert chunks[-1]["usage"]["prompt_tokens"] == answer["usage"]["prompt_tokens"]
    # byte tokens: the system turn adds its bytes plus the template's
    assert chunks[-1]["usage"]["prompt_tokens"] > short[-1]["usage"]["prompt_tokens"]


async def test_no_usage_chunk_unless_asked(server: LlamaServer) -> None:
    for extra in ({}, {"stream_options": {"include_usage": False}}):
        body = {"messages": HELLO, "max_tokens": 6, "stream": True, **extra}
        chunks = _chunks(await _post(server, "/v1/chat/completions", body))
        assert all("usage" not in c for c in chunks)
        assert all(c["choices"] for c in chunks)


async def test_text_completion_stream_gets_usage_too(server: LlamaServer) -> None:
    body = {"prompt": "once upon", "max_tokens": 5, "seed": 5}
    answer = (await _post(server, "/v1/completions", body)).json()
    chunks = _chunks(await _post(server, "/v1/completions", {**body, **WITH_USAGE}))
    assert chunks[-1]["object"] == "text_completion"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == answer["usage"]


async def test_request_body_reaches_the_model_unchanged(server: LlamaServer) -> None:
    prompt = "naïve ☕ \u2028 tabs\tand\nnewlines"
    body = {
        "prompt": prompt,
        "echo": True,
        "max_tokens": 3,
        "seed": 9,
        "user": "u" * 200_000,  # a body far over one read
        **WITH_USAGE,
    }
    streamed = _chunks(await _post(server, "/v1/completions", body))
    plain = (await _post(server, "/v1/completions", {**body, "stream": False})).json()
    assert plain["choices"][0]["text"].startswith(prompt)
    tokenized = (await _post(server, "/extras/tokenize", {"input": prompt})).json()["tokens"]
    assert plain["usage"]["prompt_tokens"] == len(tokenized)
    assert streamed[-1]["usage"]["prompt_tokens"] == len(tokenized)


async def test_load_reports_the_queue_and_the_token_rate(server: LlamaServer) -> None:
    before = await _load(server)
    body = {"messages": HELLO, "max_tokens": 1200, "seed": 1}
    requests = [asyncio.create_task(_post(server, "/v1/chat/completions", body)) for _ in range(3)]
    seen: list[LoadReport] = []
    deadline = time.monotonic() + 30.0
    for _ in range(1500):
        report = await _load(server)
        seen.append(report)
        if report.queue_depth > 0 or time.monotonic() > deadline or all(r.done() for r in requests):
            break
        await asyncio.sleep(0.02)
    answers = await asyncio.gather(*requests)
    queued = [r for r in seen if r.queue_depth > 0]
    assert queued, seen[-5:]
    assert all(r.queue_depth < r.in_flight <= 3 for r in queued)

    after = await _load(server)
    generated = sum(a.json()["usage"]["completion_tokens"] for a in answers)
    assert after.completion_tokens_total - before.completion_tokens_total == generated
    assert after.tokens_per_s > 0
    assert after.queue_depth == 0


async def test_load_endpoint_answers_while_the_model_is_busy(server: LlamaServer) -> None:
    body = {"messages": HELLO, "max_tokens": 1200, "seed": 2}
    request = asyncio.create_task(_post(server, "/v1/chat/completions", body))
    busy = None
    for _ in range(500):
        report = await server.read_load(timeout_s=0.5)
        assert report is not None  # answered within 0.5 s although generation runs
        if report.in_flight:
            busy = report
            break
        await asyncio.sleep(0.01)
    await request
    assert busy is not None
    assert busy.queue_depth == 0
