"""FrozenHeap: the served state leaves full collections; reference cycles among frozen
objects are reclaimed once the heap thaws."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from tests.unit.reconciler.policyfiles import policy_files
from tests.unit.reconciler.test_incremental import FLEET_CATALOG, Rig
from tiermesh.controlplane.reconciler import Reconciler, default_compiler
from tiermesh.controlplane.reconciler.heap import FrozenHeap
from tiermesh.controlplane.store import MemoryStore
from tiermesh.rego import RegorusEngine
from tiermesh.xds import SnapshotCache


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Node:
    """A reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_settle_freezes_and_every_nth_settle_thaws() -> None:
    heap = FrozenHeap(thaw_every=3)
    heap.settle()
    assert gc.get_freeze_count() > 0
    heap.settle()
    assert gc.get_freeze_count() > 0
    heap.settle()
    assert gc.get_freeze_count() == 0
    assert heap.thaws == 1
    heap.settle()
    assert gc.get_freeze_count() > 0
    heap.release()
    assert gc.get_freeze_count() == 0


def test_a_frozen_cycle_is_reclaimed_after_the_thaw() -> None:
    heap = FrozenHeap(thaw_every=2)
    cycle = Node()
    alive = weakref.ref(cycle)
    heap.settle()  # frozen while still referenced
    del cycle
    gc.collect()
    assert alive() is not None  # frozen: the collector does not see it
    heap.settle()  # the thaw
    gc.collect()
    assert alive() is None


def test_no_automatic_collection_while_held() -> None:
    heap = FrozenHeap()
    with heap.hold():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with heap.hold():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


def test_thaw_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="thaw_every"):
        FrozenHeap(thaw_every=0)


async def test_a_reconciler_freezes_after_each_success_and_thaws_when_closed() -> None:
    store = MemoryStore()
    settings = Rig().fleet.settings_for
    reconciler = Reconciler(
        store, RegorusEngine, default_compiler(settings), SnapshotCache(), freeze_heap=True
    )
    await store.push_bundle(policy_files("garbage: [", nodes=None), expected_revision=0)
    refused = await reconciler.reconcile_now()
    assert not refused.ok
    assert gc.get_freeze_count() == 0
    await store.push_bundle(policy_files(FLEET_CATALOG, nodes=None), expected_revision=1)
    served = await reconciler.reconcile_now()
    assert served.ok, served.errors
    assert gc.get_freeze_count() > 0
    await reconciler.aclose()
    assert gc.get_freeze_count() == 0
