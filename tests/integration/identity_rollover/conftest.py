"""Fixtures for the shared-CA and rollover tests: a store per implementation, a socket dir."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.stores import STORE_KINDS, store_of
from tiermesh.controlplane.store import Store
from tiermesh.procs.etcd import EtcdServer


@pytest.fixture(scope="session")
def rollover_etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A MemoryStore, or an EtcdStore on a real etcd under a root of its own."""
    async with store_of(request.param, lambda: request.getfixturevalue("rollover_etcd")) as chosen:
        yield chosen


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A private directory with a short path (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tm-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
