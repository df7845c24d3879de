"""`LlamaServer.read_load` gives None, quickly, when no load report comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tiermesh.agents.models import LlamaServer
from tiermesh.procs.ports import LOOPBACK, free_port


async def test_none_at_once_when_nothing_listens(tmp_path: Path) -> None:
    server = LlamaServer(tmp_path / "absent.gguf", port=free_port(LOOPBACK))
    started = time.monotonic()
    assert await server.read_load() is None
    assert time.monotonic() - started < 0.5


async def test_none_within_the_timeout_when_the_server_never_answers(tmp_path: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keep the connection open, say nothing

    silent = await asyncio.start_server(hold, LOOPBACK, 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        server = LlamaServer(tmp_path / "absent.gguf", port=port)
        started = time.monotonic()
        assert await server.read_load(timeout_s=0.2) is None
        assert 0.2 <= time.monotonic() - started < 1.0
        assert accepted
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_none_when_the_answer_is_not_a_load_report(tmp_path: Path) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found")
        await writer.drain()
        writer.close()

    other = await asyncio.start_server(answer, LOOPBACK, 0)
    try:
        server = LlamaServer(tmp_path / "absent.gguf", port=other.sockets[0].getsockname()[1])
        assert await server.read_load() is None
    finally:
        other.close()
        await other.wait_closed()
