"""Leader election between real ``tiermesh controlplane run`` replicas over one etcd.

Each replica reports in its status whether it leads; exactly one leads; a leader that is
killed, or paused past its lease (SIGSTOP: what a partition from etcd looks like to the
others), is replaced within the lease TTL, and a resumed one steps down. Fencing itself
(a deposed leader's write refused by etcd) is proven on the store in
``tests/integration/store/test_store_leadership.py`` and, for the write the leader makes
for each reconcile, here by reading the fenced mark's holder.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.controlplane.test_controlplane_run import Running, start_plane
from tiermesh.cli.status_cmd import fetch_status
from tiermesh.controlplane.runtime.leadership import LEADER_KEY, Leadership
from tiermesh.controlplane.store import EtcdStore, NotLeader
from tiermesh.procs.etcd import EtcdServer

pytestmark = [pytest.mark.etcd]

LEADER_TTL = 2


def leadership(plane: Running) -> dict[str, Any]:
    document = fetch_status(plane.admin, timeout_s=2)
    value: dict[str, Any] = document["leadership"]
    return value


def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``check``; seconds it took. Fails naming ``what``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if check():
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@pytest.fixture
def replicas(tmp_path: Path, etcd: EtcdServer) -> Iterator[tuple[Running, Running]]:
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    started: list[Running] = []
    try:
        for name in ("cp-a", "cp-b"):
            folder = tmp_path / name
            folder.mkdir()
            extra = ("--replica", name, "--leader-ttl", str(LEADER_TTL))
            started.append(start_plane(folder, etcd.endpoint, *extra, root=root))
            if name == "cp-a":  # the first replica leads before the second starts
                eventually(lambda: leadership(started[0])["leader"], 10, "cp-a leads")
        yield started[0], started[1]
    finally:
        for plane in started:
            plane.proc.send_signal(signal.SIGCONT)
            plane.proc.kill()
            plane.proc.communicate(timeout=10)


def test_one_replica_leads_and_the_other_names_it(replicas: tuple[Running, Running]) -> None:
    a, b = replicas
    eventually(lambda: leadership(b)["current_leader"] is not None, 5, "cp-b sees a leader")
    first, second = leadership(a), leadership(b)
    assert first["leader"] is True
    assert second["leader"] is False
    assert second["current_leader"] == first["holder"]
    assert first["holder"].startswith("cp-a/")


def test_a_killed_leader_is_replaced_within_its_lease(replicas: tuple[Running, Running]) -> None:
    a, b = replicas
    a.proc.kill()
    a.proc.communicate(timeout=10)
    took = eventually(lambda: leadership(b)["leader"], LEADER_TTL + 3, "cp-b leads")
    assert took <= LEADER_TTL + 1.5


def test_a_paused_leader_is_replaced_and_steps_down_when_resumed(
    replicas: tuple[Running, Running],
) -> None:
    a, b = replicas
    a.proc.send_signal(signal.SIGSTOP)
    took = eventually(lambda: leadership(b)["leader"], LEADER_TTL + 3, "cp-b leads")
    assert took <= LEADER_TTL + 1.5
    term_b = leadership(b)["term"]
    a.proc.send_signal(signal.SIGCONT)
    eventually(lambda: not leadership(a)["leader"], 3, "cp-a steps down after SIGCONT")
    time.sleep(LEADER_TTL)  # cp-a campaigns again meanwhile: it must not win
    assert leadership(a)["leader"] is False
    assert leadership(a)["current_leader"] == leadership(b)["holder"]
    assert leadership(b)["term"] == term_b


async def leads(candidate: Leadership, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not candidate.is_leader:  # noqa: ASYNC110 - polling a background task's state
            await asyncio.sleep(0.05)


async def test_a_stopped_leader_resigns_so_the_next_leads_at_once(etcd: EtcdServer) -> None:
    """In-process: `aclose` revokes the lease, so the successor does not wait for the TTL;
    the resigned term's fence no longer writes."""
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    async with (
        EtcdStore(etcd.endpoint, root=root) as store_a,
        EtcdStore(etcd.endpoint, root=root) as store_b,
    ):
        a = Leadership(store_a, holder=b"a/1", ttl_s=10, retry_s=0.1)
        b = Leadership(store_b, holder=b"b/1", ttl_s=10, retry_s=0.1)
        await a.start()
        await leads(a, 5)
        fence = a.fence
        assert fence is not None
        await b.start()
        await asyncio.sleep(0.3)
        assert not b.is_leader
        assert b.current_holder == "a/1"
        started = time.monotonic()
        await a.aclose()
        await leads(b, 3)
        assert time.monotonic() - started < 1.5  # not the 10 s TTL
        with pytest.raises(NotLeader):
            await store_a.put_fenced(fence, "leader/plans", b"late")
        held = await store_b.get(LEADER_KEY)
        assert held is not None
        assert held.value == b"b/1"
        await b.aclose()
        assert await store_b.get(LEADER_KEY) is None
