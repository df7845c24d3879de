"""A reconciler on a MemoryStore with a manual clock, and helpers to drive its debounce."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.controlplane.api import NodeInfo
from tiermesh.controlplane.reconciler import Reconciler, ReconcileResult
from tiermesh.controlplane.store import ManualClock, MemoryStore
from tiermesh.rego import RegorusEngine
from tiermesh.xds import SnapshotCache

DEBOUNCE_S = 0.1
MONTH_CHECK_S = 60.0
MONTH = "2026-12"
"""The usage month of the rig's wall clock until a test moves it."""
STATIC = NodeInfo(id="static-1", tier="local", region="eu-west")


class Rig:
    """The pieces of one test: store, clock, cache, compiler, reconciler."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.now = datetime(2026, 12, 31, 22, 0, tzinfo=UTC)
        """The reconciler's wall clock (it picks the usage month); tests may move it."""
        self.store = MemoryStore(clock=self.clock)
        self.cache = SnapshotCache()
        self.compiler = FakeCompiler()
        self.reconciler = Reconciler(
            self.store,
            RegorusEngine,
            self.compiler,
            self.cache,
            debounce_s=DEBOUNCE_S,
            clock=self.clock,
            static_nodes=[STATIC],
            retry_s=1.0,
            wall_clock=lambda: self.now,
            month_check_s=MONTH_CHECK_S,
        )

    async def push(self, files: dict[str, bytes] | None = None) -> int:
        current = await self.store.get_bundle()
        pushed = await self.store.push_bundle(
            files if files is not None else policy_files(),
            expected_revision=current.revision,
            provenance={"git_commit": f"c{current.revision + 1}"},
        )
        return pushed.revision

    async def settle(self, step_s: float = DEBOUNCE_S) -> ReconcileResult:
        """Advance the clock until a reconcile newer than the current one has finished."""
        before = self.reconciler.last_result.number if self.reconciler.last_result else 0
        async with asyncio.timeout(10):
            while True:
                result = self.reconciler.last_result
                if result is not None and result.number > before:
                    return result
                for _ in range(5):
                    await asyncio.sleep(0)
                self.clock.advance(step_s)
                await asyncio.sleep(0.005)

    def versions(self) -> dict[str, str]:
        snapshots = {key: self.cache.get_snapshot(key) for key in self.cache.keys()}  # noqa: SIM118
        return {key: s.version for key, s in snapshots.items() if s is not None}


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    yield rig
    await rig.reconciler.aclose()
    await rig.store.aclose()
