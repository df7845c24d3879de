"""A reconciler on a MemoryStore that records its plans in a real audit database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.decisionlog.helpers import TRUST_DOMAIN, new_ca
from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.controlplane.api import DecisionRecord, NodeInfo
from tiermesh.controlplane.api.join import control_plane_spiffe_id
from tiermesh.controlplane.audit import AuditQuery, AuditStore, PlanRecorder
from tiermesh.controlplane.bundle import BundleOutcome
from tiermesh.controlplane.identity import LocalCertificateAuthority, utc_now
from tiermesh.controlplane.identity.server_cert import issue_server_certificate
from tiermesh.controlplane.reconciler import Reconciler, ReconcileResult
from tiermesh.controlplane.store import ManualClock, MemoryStore
from tiermesh.rego import RegorusEngine
from tiermesh.xds import SnapshotCache

NODES = (
    NodeInfo(id="edge-1", tier="local", region="eu-west", residency=("eu",)),
    NodeInfo(id="gpu-1", tier="private", region="eu-west"),
)
CHAIN = control_plane_spiffe_id(TRUST_DOMAIN)


def recorder_for(ca: LocalCertificateAuthority, store: AuditStore) -> PlanRecorder:
    """A recorder signing with a fresh server certificate of ``ca`` (as at each start)."""
    certificate = issue_server_certificate(ca, now=utc_now())
    return PlanRecorder(
        store,
        chain_id=certificate.spiffe_id,
        trust_domain=TRUST_DOMAIN,
        key=certificate.private_key,
        chain=(certificate.certificate, certificate.intermediate),
    )


class Rig:
    """Store, clock, cache, compiler, reconciler and the audit database it records into."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.ca = new_ca()
        self.clock = ManualClock()
        self.store = MemoryStore(clock=self.clock)
        self.cache = SnapshotCache()
        self.compiler = FakeCompiler()
        self.audit = AuditStore(db)
        self.recorder = recorder_for(self.ca, self.audit)
        self.reconciler = Reconciler(
            self.store,
            RegorusEngine,
            self.compiler,
            self.cache,
            debounce_s=0.1,
            clock=self.clock,
            static_nodes=NODES,
            on_plans=self._record,
        )

    async def _record(self, result: ReconcileResult, outcome: BundleOutcome) -> None:
        await self.recorder.record(result, outcome, self.reconciler.published)

    async def push(self, files: dict[str, bytes] | None = None) -> int:
        current = await self.store.get_bundle()
        pushed = await self.store.push_bundle(
            files if files is not None else policy_files(),
            expected_revision=current.revision,
            provenance={"git_commit": f"c{current.revision + 1}"},
        )
        return pushed.revision

    async def reconcile(self) -> ReconcileResult:
        """One reconcile now, and let the background loop's own run (if any) finish."""
        result = await self.reconciler.reconcile_now()
        await asyncio.sleep(0)
        return result

    def plans(self) -> list[DecisionRecord]:
        """Every plan record, in chain order."""
        return [row.record for row in self.audit.chain(CHAIN)]

    def query_plans(self) -> list[DecisionRecord]:
        return [row.record for row in self.audit.query(AuditQuery(kind="plan"))]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path / "audit.sqlite3")
    try:
        yield rig
    finally:
        await rig.reconciler.aclose()
        await rig.store.aclose()
        rig.audit.close()
