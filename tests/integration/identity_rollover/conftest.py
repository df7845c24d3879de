"""Fixtures for the shared-CA and rollover tests: a store per implementation, a socket dir."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tiermesh.controlplane.store import EtcdStore, MemoryStore, Store
from tiermesh.procs.etcd import EtcdServer


@pytest.fixture(scope="session")
def rollover_etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture(params=["memory", pytest.param("etcd", marks=pytest.mark.etcd)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A MemoryStore, or an EtcdStore on a real etcd under a root of its own."""
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    chosen: MemoryStore | EtcdStore
    if request.param == "memory":
        chosen = MemoryStore(root=root)
    else:
        server: EtcdServer = request.getfixturevalue("rollover_etcd")
        chosen = EtcdStore(server.endpoint, root=root)
        await chosen.connect()
    try:
        yield chosen
    finally:
        await chosen.aclose()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A private directory with a short path (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tm-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
