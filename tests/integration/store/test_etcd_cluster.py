"""EtcdCluster: three real etcd members on loopback, started, faulted and cleaned up by PID."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tiermesh.controlplane.store import EtcdStore
from tiermesh.procs.etcd_cluster import EtcdCluster

pytestmark = pytest.mark.etcd


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped child is gone; a zombie would still answer signal 0, so check its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_members_elect_one_leader_and_close_removes_processes_and_data() -> None:
    cluster = EtcdCluster.for_tests()
    cluster.start()
    try:
        assert len(set(cluster.endpoints)) == 3
        pids = [cluster.pid(i) for i in range(3)]
        data_dirs = [cluster.data_dir(i) for i in range(3)]
        assert all(cluster.healthy(i) for i in range(3))
        assert cluster.wait_for_leader() in range(3)
        assert all((data / "member").is_dir() for data in data_dirs)
    finally:
        cluster.close()
    assert not any(_alive(pid) for pid in pids)
    assert not any(data.exists() for data in data_dirs)


def test_killing_the_leader_elects_another_and_restart_rejoins_with_its_data() -> None:
    with EtcdCluster.for_tests() as cluster:
        leader = cluster.wait_for_leader()
        old_pid = cluster.pid(leader)

        async def write() -> None:
            async with EtcdStore(cluster.endpoints) as store:
                await store.put("ca/before", b"1")

        asyncio.run(write())
        cluster.kill(leader)
        assert not cluster.running(leader)
        assert not _alive(old_pid)
        assert cluster.wait_for_leader(other_than=leader) != leader

        cluster.restart(leader)
        assert cluster.healthy(leader)

        async def read_from_restarted() -> bytes | None:
            async with EtcdStore(cluster.endpoint(leader)) as store:
                found = await store.get("ca/before")
            return None if found is None else found.value

        assert asyncio.run(read_from_restarted()) == b"1"


def test_a_paused_member_is_unhealthy_until_resumed() -> None:
    with EtcdCluster.for_tests() as cluster:
        leader = cluster.wait_for_leader()
        follower = (leader + 1) % 3
        cluster.pause(follower)
        try:
            assert not cluster.healthy(follower)
            assert cluster.leader() == leader
        finally:
            cluster.resume(follower)
        cluster.wait_healthy(follower, 10.0)


def test_bad_arguments_are_refused_with_the_problem_named() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        EtcdCluster(0)
    cluster = EtcdCluster.for_tests()
    with pytest.raises(RuntimeError, match="not started"):
        _ = cluster.endpoints
    with cluster:
        with pytest.raises(IndexError, match="out of range"):
            cluster.kill(3)
        cluster.kill(0)
        with pytest.raises(RuntimeError, match="not running"):
            cluster.pause(0)
