"""Fixtures for the model-server tests: the tiny GGUF, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiermesh.agents.models import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")
