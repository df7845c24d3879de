"""Fixtures for identity integration tests: a store per implementation, a CA and its keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.stores import STORE_KINDS, store_of
from tiermesh.controlplane.store import Store
from tiermesh.procs.etcd import EtcdServer


@pytest.fixture(scope="session")
def identity_etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A MemoryStore, or an EtcdStore on a real etcd under a root of its own."""
    async with store_of(request.param, lambda: request.getfixturevalue("identity_etcd")) as chosen:
        yield chosen
