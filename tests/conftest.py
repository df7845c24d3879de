"""Shared pytest configuration for tiermesh's tests."""

from __future__ import annotations

import os

import pytest

from tiermesh.procs.ports import PORT_RANGE_ENV, server_ports

pytest_plugins = ("tests.support.llama_fixtures",)


def pytest_configure(config: pytest.Config) -> None:
    """Parallel workers (``pytest -n N``) each hand out server ports from a range of their
    own, inherited by every process they start: a port one worker picked for a server that
    binds it later is never picked by another worker meanwhile."""
    worker = getattr(config, "workerinput", None)
    ports = server_ports()
    if worker is None or ports is None:
        return
    index = int(worker["workerid"].removeprefix("gw"))
    size = len(ports) // int(worker["workercount"])
    first = ports.start + index * size
    os.environ[PORT_RANGE_ENV] = f"{first}-{first + size - 1}"
