"""LlamaServer refuses bad input with errors that name the cause, and leaves nothing behind."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from tiermesh.agents.models import (
    LlamaServer,
    ModelFileNotFoundError,
    ModelLoadError,
    PortInUseError,
    ServerExitedError,
)

pytestmark = pytest.mark.model


def _no_llama_servers() -> bool:
    me = psutil.Process()
    return not any("llama_cpp.server" in " ".join(c.cmdline()) for c in me.children(recursive=True))


@pytest.fixture
def truncated(tiny_gguf: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:100_000])
    return broken


async def test_truncated_model_names_the_file_and_the_cause(truncated: Path) -> None:
    broken = truncated
    with pytest.raises(ModelLoadError) as caught:
        await LlamaServer(broken).start()
    error = caught.value
    assert error.path == broken
    assert "not within the file bounds" in error.cause
    assert str(broken) in str(error)
    assert "did not load" in str(error)
    assert _no_llama_servers()


@pytest.fixture
def junk(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_text("this is not a model\n")
    return path


async def test_a_file_that_is_not_gguf(junk: Path) -> None:
    with pytest.raises(ModelLoadError, match="invalid magic") as caught:
        await LlamaServer(junk).start()
    assert str(junk) in str(caught.value)


async def test_missing_model_file_starts_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    server = LlamaServer(missing)
    with pytest.raises(ModelFileNotFoundError, match=r"absent\.gguf.*does not exist"):
        await server.start()
    assert server.pid is None


async def test_port_in_use_names_the_port(tiny_gguf: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            await LlamaServer(tiny_gguf, port=port).start()


async def test_server_exiting_during_startup_says_why(tiny_gguf: Path) -> None:
    server = LlamaServer(tiny_gguf, extra_args=["--n_ctx", "lots"])
    with pytest.raises(ServerExitedError) as caught:
        await server.start()
    assert caught.value.exit_code == 2
    assert "exited with code 2" in str(caught.value)
    assert "invalid int value: 'lots'" in caught.value.log_tail
    assert _no_llama_servers()
