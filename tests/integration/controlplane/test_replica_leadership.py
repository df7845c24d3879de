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
import datetime as dt
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.audit.conftest import signing
from tests.integration.controlplane.test_controlplane_run import TD, Running, start_plane, tiermesh
from tests.unit.decisionlog.helpers import entry
from tiermesh.agents.decisionlog import DecisionLog, GrpcShipClient, Shipper, StaticSigner
from tiermesh.agents.identity import load_material
from tiermesh.agents.identity.join_client import join
from tiermesh.cli.status_cmd import fetch_status
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.audit import merge_stores, verify_store
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
    said = [tiermesh("status", "--admin", plane.admin) for plane in (a, b)]
    assert [result.returncode for result in said] == [0, 0], said
    text = [" ".join(result.stdout.split()) for result in said]
    assert f"this replica ({first['holder']}) leads, term {first['term']}" in text[0]
    assert f"follows; leader: {first['holder']}" in text[1]


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


async def test_decisions_go_to_the_other_replica_while_one_is_paused(
    replicas: tuple[Running, Running], tmp_path: Path
) -> None:
    """A node's decision shipper, given both replicas' collectors, keeps shipping while
    the one it used is frozen (SIGSTOP), and the frozen one's databases merge whole."""
    a, b = replicas
    token = tiermesh("token", "create", "--node-id", "edge-1", "--etcd", a.etcd, "--root", a.root)
    assert token.returncode == 0, token.stderr
    key = ec.generate_private_key(ec.SECP256R1())
    chain, bundle = await join(
        f"127.0.0.1:{a.ports['join']}",
        token.stdout.strip(),
        key,
        trust_bundle_pem=(a.data_dir / "bundle.pem").read_bytes(),
        server_name=control_plane_dns_name(TD),
    )
    material = load_material(key, chain, bundle, now=dt.datetime.now(dt.UTC))
    collectors = [fetch_status(plane.admin)["addresses"]["audit"] for plane in (a, b)]
    client = GrpcShipClient(
        collectors, lambda: material, server_name=control_plane_dns_name(TD), timeout_s=2
    )
    async with DecisionLog(tmp_path / "spool", StaticSigner(signing(material))) as log:
        shipper = Shipper(log, client, prune=False)
        for index in range(5):
            await log.append(entry(index))
        assert await shipper.ship_once() == 5
        assert client.target == collectors[0]
        a.proc.send_signal(signal.SIGSTOP)
        try:
            for index in range(5, 10):
                await log.append(entry(index))
            started = time.monotonic()
            async with asyncio.timeout(15):
                assert await shipper.ship_once() == 5
            assert time.monotonic() - started < 5
            assert client.target == collectors[1]
        finally:
            a.proc.send_signal(signal.SIGCONT)
        for index in range(10, 12):
            await log.append(entry(index))
        async with asyncio.timeout(15):
            assert await shipper.ship_once() == 2
    databases = [plane.data_dir / "audit.sqlite3" for plane in (a, b)]
    merged, report = merge_stores(databases)
    with merged:
        assert report.records == 12
        assert [r.record.seq for r in merged.chain(material.spiffe_id)] == list(range(12))
        assert verify_store(merged).ok
