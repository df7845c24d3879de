"""The tiny GGUF is a real llama model to llama.cpp: it loads, chats and gives logprobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from llama_cpp import Llama

from tiermesh.agents.models import write_tiny_gguf

pytestmark = pytest.mark.model


def test_loads_and_chats_with_logprobs(tiny_gguf: Path) -> None:
    assert tiny_gguf.stat().st_size < 1_000_000
    started = time.perf_counter()
    llm = Llama(str(tiny_gguf), n_threads=1, n_ctx=256, logits_all=True, verbose=False)
    assert time.perf_counter() - started < 2.0
    reply = llm.create_chat_completion(
        [{"role": "user", "content": "bonjour, ça va ?"}],
        max_tokens=16,
        logprobs=True,
        top_logprobs=2,
    )
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert reply["usage"]["completion_tokens"] >= 1
    tokens = choice["logprobs"]["content"]
    assert tokens
    # top_logprobs are keyed by token text in llama-cpp-python: byte tokens that decode to
    # the same (often empty) text collapse, so a step may list fewer than two.
    assert all(t["top_logprobs"] and t["logprob"] <= 0 for t in tokens)
    llm.close()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=7).read_bytes()
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=7).read_bytes()
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=8).read_bytes()
    assert a == b
    assert a != c
