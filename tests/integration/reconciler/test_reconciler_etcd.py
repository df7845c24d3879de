"""The reconciler on a real etcd with real time: pushes, refusals, registrations, bursts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import node_registration, policy_files
from tiermesh.controlplane.bundle import Stage
from tiermesh.controlplane.reconciler import Reconciler
from tiermesh.controlplane.store import EtcdStore
from tiermesh.procs.etcd import EtcdServer
from tiermesh.rego import RegorusEngine
from tiermesh.xds import SnapshotCache

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


class Rig:
    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.cache = SnapshotCache()
        self.reconciler = Reconciler(
            store, RegorusEngine, FakeCompiler(), self.cache, debounce_s=0.05
        )

    async def push(self, files: dict[str, bytes] | None = None) -> int:
        current = await self.store.get_bundle()
        pushed = await self.store.push_bundle(
            files or policy_files(), expected_revision=current.revision
        )
        return pushed.revision

    def versions(self) -> dict[str, str]:
        keys = self.cache.keys()
        return {k: s.version for k in keys if (s := self.cache.get_snapshot(k))}


@pytest.fixture
async def rig(etcd_server: EtcdServer) -> AsyncIterator[Rig]:
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    async with EtcdStore(etcd_server.endpoint, root=root) as store:
        rig = Rig(store)
        await rig.store.register_node("edge-1", node_registration("edge-1"), ttl_s=30)
        await rig.reconciler.start()
        await rig.reconciler.wait_for(lambda r: True, timeout_s=5)
        yield rig
        await rig.reconciler.aclose()


async def test_push_reaches_nodes_within_a_second(rig: Rig) -> None:
    began = time.perf_counter()
    revision = await rig.push()
    result = await rig.reconciler.wait_for(lambda r: r.bundle_revision == revision, timeout_s=1)
    elapsed = time.perf_counter() - began
    assert result.ok, result.errors
    assert rig.cache.keys() == ["edge-1"]
    assert elapsed < 1.0


async def test_a_broken_bundle_is_refused(rig: Rig) -> None:
    good = await rig.push()
    await rig.reconciler.wait_for(lambda r: r.bundle_revision == good and r.ok)
    before = rig.versions()
    files = policy_files()
    files["data/catalog.yaml"] = files["data/catalog.yaml"].replace(b"tier: cloud", b"tier: sky")
    bad = await rig.push(files)
    result = await rig.reconciler.wait_for(lambda r: r.bundle_revision == bad)
    assert not result.ok
    assert rig.versions() == before
    assert rig.reconciler.bundle_revision == good
    error = rig.reconciler.last_error
    assert error is not None
    assert error.bundle_revision == bad
    assert [f.stage for f in error.findings] == [Stage.CATALOG]
    assert "data/catalog.yaml:" in str(error)
    assert "backends[1].tier" in str(error)


async def test_a_registration_gets_a_snapshot_and_expiry_removes_it(rig: Rig) -> None:
    await rig.push()
    lease = await rig.store.register_node("edge-2", node_registration("edge-2"), ttl_s=30)
    await rig.reconciler.wait_for(lambda r: "edge-2" in r.published, timeout_s=2)
    assert rig.cache.get_snapshot("edge-2") is not None
    await rig.store.revoke_lease(lease)
    await rig.reconciler.wait_for(lambda r: "edge-2" in r.removed, timeout_s=2)
    assert rig.cache.keys() == ["edge-1"]


async def test_a_burst_of_twenty_writes_takes_few_reconciles(rig: Rig) -> None:
    await rig.push()
    await rig.reconciler.wait_for(lambda r: r.ok and r.bundle_revision == 1)
    count = rig.reconciler.reconcile_count
    last = 0
    for _ in range(20):
        last = await rig.push()
    await rig.reconciler.wait_for(lambda r: r.bundle_revision == last, timeout_s=3)
    await asyncio.sleep(0.2)
    assert rig.reconciler.reconcile_count - count <= 3
