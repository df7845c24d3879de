"""Local model servers for a node: llama.cpp under supervision, and the models it serves
(a tiny random-weight GGUF for tests, SmolLM2-135M-Instruct for the demo)."""

from __future__ import annotations

from tiermesh.agents.models.buffers import without_extra_buffers
from tiermesh.agents.models.errors import (
    ModelFileNotFoundError,
    ModelLoadError,
    ModelNotInstalledError,
    ModelServerError,
    PortInUseError,
    ServerExitedError,
    ServerNotReadyError,
)
from tiermesh.agents.models.llama_server import LlamaServer
from tiermesh.agents.models.smollm2 import (
    SMOLLM2_INSTALL,
    SMOLLM2_PACKAGE,
    smollm2_available,
    smollm2_path,
)
from tiermesh.agents.models.tiny_gguf import TINY_CHAT_TEMPLATE, write_tiny_gguf

__all__ = [
    "SMOLLM2_INSTALL",
    "SMOLLM2_PACKAGE",
    "TINY_CHAT_TEMPLATE",
    "LlamaServer",
    "ModelFileNotFoundError",
    "ModelLoadError",
    "ModelNotInstalledError",
    "ModelServerError",
    "PortInUseError",
    "ServerExitedError",
    "ServerNotReadyError",
    "smollm2_available",
    "smollm2_path",
    "without_extra_buffers",
    "write_tiny_gguf",
]
