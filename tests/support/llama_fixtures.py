"""Fixtures for suites that put a real llama.cpp server (the tiny GGUF) behind Envoy:
``loop_thread`` (an event loop the blocking tests own async servers on) and
``edge_server`` (one llama.cpp server per test module). Registered for every suite by
the root conftest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.flows.harness import LoopThread
from tiermesh.agents.models import LlamaServer, write_tiny_gguf


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def edge_server(
    loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    model = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    server = LlamaServer(model, alias="edge-model")
    loop_thread.run(server.start())
    yield server
    loop_thread.run(server.stop())
