"""Fixtures for the Store contract suite: one harness per implementation.

The etcd harnesses share one session-scoped server (loopback, free ports, no fsync) or one
session-scoped 3-member cluster (the store is given every member's endpoint) and give every
test its own key root, so tests cannot see each other's keys.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tiermesh.controlplane.store import EtcdStore, ManualClock, MemoryStore, Store
from tiermesh.controlplane.store.memory import MEMORY_ENDPOINT
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.etcd_cluster import EtcdCluster


class Harness:
    """A store under test plus the knobs the contract needs that differ per implementation."""

    def __init__(self, kind: str, server: EtcdServer | EtcdCluster | None) -> None:
        self.kind = kind
        self.server = server
        self.root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
        self.clock = ManualClock()
        self._stores: list[Any] = []
        self.store: Store

    @property
    def endpoint(self) -> str:
        """What the store is given: one endpoint, or a cluster's comma list."""
        if self.server is None:
            return MEMORY_ENDPOINT
        if isinstance(self.server, EtcdCluster):
            return ",".join(self.server.endpoints)
        return self.server.endpoint

    async def new_store(self, **limits: int) -> Store:
        """Another store with its own limits (etcd: same data; memory: a fresh fake)."""
        store: Any
        if self.server is None:
            store = MemoryStore(root=self.root, clock=self.clock, **limits)
        else:
            store = EtcdStore(self.endpoint, root=self.root, **limits)
            await store.connect()
        self._stores.append(store)
        return store  # type: ignore[no-any-return]

    async def let_time_pass(self, seconds: float) -> None:
        """Advance the fake's clock, or really wait for etcd's lease clock."""
        if self.server is None:
            self.clock.advance(seconds)
            for _ in range(10):  # let woken tasks finish their store calls
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)

    async def sleep(self, seconds: float) -> None:
        """What a background task of the code under test sleeps with."""
        if self.server is None:
            await self.clock.sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    async def eventually(
        self, check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0
    ) -> None:
        """Poll ``check`` until true; etcd applies lease expiry on its own schedule."""
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - polling another process's state
                await asyncio.sleep(0.05)

    async def put_raw(self, key: str, value: bytes) -> None:
        """Write ``key`` (relative to the root) bypassing the typed API: what an older
        version of tiermesh left behind in a namespace the typed API now guards."""
        store: Any = self.store
        if self.server is None:
            store._apply(puts=[(self.root + key, value, 0)], deletes=())
        else:
            await store._client.put((self.root + key).encode(), value)

    async def aclose(self) -> None:
        for store in self._stores:
            await store.aclose()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster.for_tests() as cluster:
        yield cluster


_SERVERS = {"memory": None, "etcd": "etcd_server", "etcd-cluster": "etcd_cluster"}


@pytest.fixture(
    params=[
        "memory",
        pytest.param("etcd", marks=pytest.mark.etcd),
        pytest.param("etcd-cluster", marks=pytest.mark.etcd),
    ]
)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    fixture = _SERVERS[request.param]
    server = None if fixture is None else request.getfixturevalue(fixture)
    harness = Harness(request.param, server)
    harness.store = await harness.new_store()
    yield harness
    await harness.aclose()


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store
