"""The HA chaos suite: 3 etcd members, 2 control-plane replicas and the demo mesh under
steady traffic and a policy push every few seconds, through the death of the leader
replica, of the edge's replica, of an etcd member and of the etcd leader, a paused
(partitioned) replica, and a restart of everything one by one (:mod:`tests.e2e.ha_chaos`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.ha_chaos import PUSH_WITHIN_S, ChaosReport, run_chaos
from tiermesh.demo.mesh import LocalMesh
from tiermesh.procs.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model,
              pytest.mark.timeout(900)]  # fmt: skip


@pytest.fixture(scope="module")
async def report(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ChaosReport]:
    mesh = LocalMesh(
        app_port=free_port(), state_dir=tmp_path_factory.mktemp("ha-chaos") / "state", ha=True
    )
    await mesh.start(lambda _: None)
    try:
        yield await run_chaos(mesh)
    finally:
        await mesh.stop()


async def test_restricted_data_never_leaves_the_premises(report: ChaosReport) -> None:
    assert report.restricted_sent > 0
    assert report.restricted_off_prem == 0


async def test_public_requests_are_served_through_every_fault(report: ChaosReport) -> None:
    assert report.public_sent > 0
    assert report.public_failed == []


async def test_a_push_is_served_within_the_bound_after_each_fault(report: ChaosReport) -> None:
    late = [(f.name, f.push_served_s) for f in report.faults
            if f.push_served_s is None or f.push_served_s > PUSH_WITHIN_S]  # fmt: skip
    assert late == []


async def test_the_edge_moves_to_the_other_replica_without_a_nack_or_repush(
    report: ChaosReport,
) -> None:
    moved = [f for f in report.faults if f.edge_reconnect_s is not None]
    assert moved, "no fault hit the edge's replica"
    assert [(f.name, f.versions_kept) for f in moved] == [(f.name, True) for f in moved]
    assert [(f.name, f.nacks) for f in report.faults] == [(f.name, 0) for f in report.faults]


async def test_joins_and_renewals_work_after_every_fault(report: ChaosReport) -> None:
    assert [(f.name, f.join_ok, f.renew_ok) for f in report.faults] == [
        (f.name, True, True) for f in report.faults
    ]


async def test_one_replica_leads_after_every_fault(report: ChaosReport) -> None:
    assert all(f.leader_after is not None for f in report.faults)


async def test_no_audit_record_is_lost(report: ChaosReport) -> None:
    assert report.decisions
    assert report.audit_lost == 0
    assert report.audit_conflicts == 0
    assert report.audit_verified


def test_the_module_runs_in_ci_time(report: ChaosReport, tmp_path: Path) -> None:
    assert report.duration_s < 600
