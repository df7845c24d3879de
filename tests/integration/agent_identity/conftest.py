"""Fixtures for the agent identity integration tests: short socket dirs and a served store."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.agent_identity.casource import CaSource, make_ca
from tiermesh.agents.identity import SvidRotator, SvidStore, WorkloadApiServer
from tiermesh.controlplane.identity import LocalCertificateAuthority


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A private directory with a short path (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tm-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Served:
    ca: LocalCertificateAuthority
    store: SvidStore
    rotator: SvidRotator
    server: WorkloadApiServer


@pytest.fixture
async def served(sock_dir: Path) -> AsyncIterator[Served]:
    """A Workload API server for a store holding a CA-issued SVID (no rotation loop)."""
    ca = make_ca()
    store = SvidStore()
    rotator = SvidRotator(store, CaSource(ca))
    await rotator.rotate_now()
    server = WorkloadApiServer(store, sock_dir / "agent.sock")
    await server.start()
    try:
        yield Served(ca, store, rotator, server)
    finally:
        await server.stop()
