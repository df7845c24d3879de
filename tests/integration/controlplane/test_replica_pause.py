"""A node beside two real ``tiermesh controlplane run`` replicas when the one it talks to
is paused (SIGSTOP: a frozen host, as the node sees it), or is cut off from etcd.

A frozen process keeps its sockets open and the kernel keeps taking bytes for it, so only
HTTP/2 PINGs can tell. Both of the node's long-lived streams must ping and give the frozen
replica up, and neither may be sent away by a healthy replica for pinging:

- the agent's registry session (gRPC's ``ping_timeout_ms`` defaults to 60 s and holds
  every PING, keepalive ones included, so without it the session waited for the replica
  to wake up and the node's registration ran out meanwhile);
- Envoy's ADS connection (the ADS server used to keep its 10 s minimum PING interval
  whatever the control plane asked for, and sent a ``too_many_pings`` GOAWAY to every
  Envoy that pinged faster).

A replica cut off from etcd (its link black-holed) is the opposite case: it answers every
PING, so it must end its ADS streams itself for its Envoys to move to a replica that still
sees the pushes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3 import discovery_pb2

from tests.integration.controlplane.test_controlplane_run import (
    TD,
    Running,
    start_plane,
    tiermesh,
)
from tests.integration.controlplane.test_replica_leadership import (  # noqa: F401
    LEADER_TTL,
    eventually,
    replicas,
)
from tests.support.tcp_cut import CuttableLink
from tests.unit.reconciler.policyfiles import SMALL_CATALOG, policy_files, write_policy_dir
from tiermesh.agents.identity import SvidStore, load_material
from tiermesh.agents.identity.join_client import join
from tiermesh.agents.runtime.session import RegistrySession
from tiermesh.cli.status_cmd import fetch_status
from tiermesh.controlplane.api import NodeLoad, NodeRegistration
from tiermesh.controlplane.api.join import control_plane_dns_name, control_plane_spiffe_id
from tiermesh.controlplane.runtime.etcd_reach import CUT_OFF_S
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port
from tiermesh.xds import AdsTls, BootstrapSpec, render_bootstrap, typeurls
from tiermesh.xds.bootstrap import ADS_KEEPALIVE_INTERVAL_S, ADS_KEEPALIVE_TIMEOUT_S

pytestmark = [pytest.mark.etcd, pytest.mark.envoy]

NODE = "edge-1"
LEFT_WITHIN_S = ADS_KEEPALIVE_INTERVAL_S * 1.15 + ADS_KEEPALIVE_TIMEOUT_S + 2.0
"""A PING sent (interval, jittered up to 15 %) and not answered (timeout), then the
reconnect on a loaded 2-core machine."""
CUT_OFF_LEFT_WITHIN_S = CUT_OFF_S + 1.0 + 2.0
"""Cut off counted after ``CUT_OFF_S`` without an answer (checked every second), then the
reconnect on a loaded machine."""
SESSION_LEFT_WITHIN_S = 6.0
"""The registry session pings every second and gives up after two (SESSION_KEEPALIVE)."""


async def _idle() -> NodeLoad:
    return NodeLoad()


def _session(svids: SvidStore, a: Running, b: Running) -> RegistrySession:
    """``NODE``'s registry session, with both replicas' node APIs to choose from."""
    return RegistrySession(
        svids,
        NodeRegistration(node_id=NODE, tier="local", region="eu-west", app_port=free_port()),
        addresses=[f"127.0.0.1:{a.ports['node']}", f"127.0.0.1:{b.ports['node']}"],
        server_name=control_plane_dns_name(TD),
        measure=_idle,
        interval_s=0.5,
    )


async def _joined(plane: Running, folder: Path) -> tuple[SvidStore, AdsTls]:
    """``NODE`` joins through ``plane``; its SVID as the agent holds it and as Envoy reads it."""
    token = tiermesh("token", "create", "--node-id", NODE, "--etcd", plane.etcd,
                     "--root", plane.root)  # fmt: skip
    assert token.returncode == 0, token.stderr
    key = ec.generate_private_key(ec.SECP256R1())
    chain, bundle = await join(
        f"127.0.0.1:{plane.ports['join']}",
        token.stdout.strip(),
        key,
        trust_bundle_pem=(plane.data_dir / "bundle.pem").read_bytes(),
        server_name=control_plane_dns_name(TD),
    )
    svids = SvidStore()
    svids.update(load_material(key, chain, bundle, now=dt.datetime.now(dt.UTC)))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    await asyncio.to_thread(_write_svid, folder, chain, key_pem, bundle)
    tls = AdsTls(
        cert_chain=str(folder / "chain.pem"),
        private_key=str(folder / "key.pem"),
        trusted_ca=str(folder / "bundle.pem"),
        server_san=control_plane_spiffe_id(TD),
    )
    return svids, tls


def _write_svid(folder: Path, chain: bytes, key_pem: bytes, bundle: bytes) -> None:
    folder.mkdir()
    (folder / "chain.pem").write_bytes(chain)
    (folder / "key.pem").write_bytes(key_pem)
    (folder / "key.pem").chmod(0o600)
    (folder / "bundle.pem").write_bytes(bundle)


def _streams_from(plane: Running) -> int:
    """ADS streams ``plane`` says ``NODE`` has open with it (0 when it does not answer)."""
    try:
        document = fetch_status(plane.admin, timeout_s=1)
    except (OSError, ValueError):  # a paused replica does not answer
        return 0
    for node in document.get("nodes", []):
        if node["id"] == NODE:
            return int((node.get("xds") or {}).get("streams") or 0)
    return 0


def _ads_connections(envoy: EnvoyProcess) -> int:
    """Connections Envoy has opened to the ADS cluster so far."""
    stats = envoy.admin_json("/stats?format=json&filter=tiermesh_xds.upstream_cx_total")
    return sum(int(s["value"]) for s in stats["stats"] if s["name"].endswith("upstream_cx_total"))


async def _until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    return await asyncio.to_thread(eventually, check, timeout_s, what)


async def _envoy_on_both(a: Running, b: Running, tmp_path: Path) -> EnvoyProcess:
    """A real Envoy for ``NODE`` (joined through ``a``) listing both replicas' ADS, once
    it streams from one of them."""
    _, tls = await _joined(a, tmp_path / "svid")
    spec = BootstrapSpec(
        node_id=NODE, xds_host="127.0.0.1", xds_port=a.ports["ads"],
        xds_more=(("127.0.0.1", b.ports["ads"]),), admin_port=free_port(), tls=tls,
    )  # fmt: skip
    envoy = EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE)
    envoy.start()
    try:
        await _until(lambda: _streams_from(a) + _streams_from(b) == 1, 20, "Envoy streams ADS")
    except BaseException:
        await asyncio.to_thread(envoy.stop)
        raise
    return envoy


async def test_the_registry_session_leaves_a_paused_replica(
    replicas: tuple[Running, Running],  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = replicas
    svids, _ = await _joined(a, tmp_path / "svid")
    session = _session(svids, a, b)
    running = asyncio.create_task(session.run())
    try:
        await session.wait_registered(10)
        assert session.sessions == 1
        a.proc.send_signal(signal.SIGSTOP)
        try:
            took = await _until(
                lambda: session.sessions == 2, SESSION_LEFT_WITHIN_S, "registered on b"
            )
            assert session.last_error is None  # registered again, on b
            assert took < SESSION_LEFT_WITHIN_S
        finally:
            a.proc.send_signal(signal.SIGCONT)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_envoy_keeps_a_healthy_replica_and_leaves_a_paused_one(
    replicas: tuple[Running, Running],  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = replicas
    envoy = await _envoy_on_both(a, b, tmp_path)
    try:
        first = a if _streams_from(a) else b
        other = b if first is a else a
        # Idle, pinging every ADS_KEEPALIVE_INTERVAL_S: a healthy replica keeps it.
        await asyncio.sleep(ADS_KEEPALIVE_INTERVAL_S * 6)
        assert await asyncio.to_thread(_ads_connections, envoy) == 1
        assert _streams_from(first) == 1
        first.proc.send_signal(signal.SIGSTOP)
        try:
            took = await _until(
                lambda: _streams_from(other) == 1, LEFT_WITHIN_S, "Envoy on the other replica"
            )
            assert took < LEFT_WITHIN_S
        finally:
            first.proc.send_signal(signal.SIGCONT)
    finally:
        await asyncio.to_thread(envoy.stop)


@pytest.fixture
def linked_replicas(
    tmp_path: Path, etcd: EtcdServer
) -> Iterator[tuple[tuple[Running, CuttableLink], tuple[Running, CuttableLink]]]:
    """Two replicas, each reaching etcd only through a link of its own that can be cut."""
    host, _, port = etcd.endpoint.rpartition(":")
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    links: list[CuttableLink] = []
    started: list[Running] = []
    try:
        for name in ("cp-a", "cp-b"):
            link = CuttableLink(host, int(port))
            links.append(link)
            folder = tmp_path / name
            folder.mkdir()
            extra = ("--replica", name, "--leader-ttl", str(LEADER_TTL))
            started.append(start_plane(folder, link.address, *extra, root=root))
        yield (started[0], links[0]), (started[1], links[1])
    finally:
        for plane in started:
            plane.proc.kill()
            plane.proc.communicate(timeout=10)
        for link in links:
            link.close()


def _etcd_reachable(plane: Running) -> bool | None:
    try:
        document = fetch_status(plane.admin, timeout_s=1)
    except (OSError, ValueError):
        return None
    return bool(document["etcd"]["reachable"])


async def test_envoy_leaves_a_replica_cut_off_from_etcd(
    linked_replicas: tuple[tuple[Running, CuttableLink], tuple[Running, CuttableLink]],
    tmp_path: Path,
) -> None:
    """A replica cut off from etcd still answers Envoy's PINGs; it ends its ADS streams, so
    the push made meanwhile reaches its nodes through the other replica."""
    (a, link_a), (b, link_b) = linked_replicas
    envoy = await _envoy_on_both(a, b, tmp_path)
    try:
        first, link, other = (a, link_a, b) if _streams_from(a) else (b, link_b, a)
        assert _etcd_reachable(first) is True
        link.cut()
        try:
            took = await _until(
                lambda: _streams_from(other) == 1, CUT_OFF_LEFT_WITHIN_S, "Envoy on the other"
            )
            assert took < CUT_OFF_LEFT_WITHIN_S
            assert _etcd_reachable(first) is False
            assert _streams_from(first) == 0
            shown = await asyncio.to_thread(tiermesh, "status", "--admin", first.admin)
            assert shown.returncode == 0, shown.stderr
            assert "cut off from etcd" in shown.stdout
        finally:
            link.heal()
        await _until(lambda: _etcd_reachable(first) is True, 10, "etcd reachable again")
        assert _streams_from(other) == 1  # a move back would be a needless reconnect
    finally:
        await asyncio.to_thread(envoy.stop)


def _snapshot_version(plane: Running) -> str | None:
    """The snapshot version ``plane``'s status says it holds for ``NODE`` (None: none yet)."""
    try:
        document = fetch_status(plane.admin, timeout_s=1)
    except (OSError, ValueError):
        return None
    for node in document.get("nodes", []):
        if node["id"] == NODE and node.get("snapshot"):
            return str(node["snapshot"]["version"])
    return None


async def _ask_clusters() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
    """One CDS request, then the stream stays open (as Envoy's does)."""
    yield discovery_pb2.DiscoveryRequest(node=Node(id=NODE), type_url=typeurls.CLUSTER)
    await asyncio.sleep(60)


async def _first_clusters(plane: Running, svid: Path) -> str:
    """The version of the first CDS response ``plane`` sends ``NODE`` on a new stream."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(svid / "bundle.pem").read_bytes(),
        private_key=(svid / "key.pem").read_bytes(),
        certificate_chain=(svid / "chain.pem").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", control_plane_dns_name(TD))]
    target = f"127.0.0.1:{plane.ports['ads']}"
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        ads = channel.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        call = ads(_ask_clusters())
        async for response in call:
            version = str(response.version_info)
            call.cancel()
            return version
    raise AssertionError("the ADS stream ended without a response")


async def test_a_resumed_replica_serves_nothing_from_before_its_pause(
    replicas: tuple[Running, Running],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A push lands while replica a is frozen; a stream that reaches a as it resumes (here:
    connected while it was frozen) gets the pushed clusters, not a's old ones, although a's
    etcd watch has not caught up when the stream's request is read."""
    a, b = replicas
    pushed = tiermesh("policy", "push", str(write_policy_dir(tmp_path / "v1")), "--etcd",
                      a.etcd, "--root", a.root)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    svids, _ = await _joined(a, tmp_path / "svid")
    session = _session(svids, a, b)
    running = asyncio.create_task(session.run())
    try:
        await session.wait_registered(10)
        await _until(
            lambda: (
                _snapshot_version(a) is not None and _snapshot_version(a) == _snapshot_version(b)
            ),
            15,
            "both replicas hold the node's snapshot",
        )
        before = _snapshot_version(b)
        old_clusters = await _first_clusters(a, tmp_path / "svid")
        wider = SMALL_CATALOG.replace("max_connections: 8", "max_connections: 9")
        a.proc.send_signal(signal.SIGSTOP)
        try:
            moved = write_policy_dir(tmp_path / "v2", policy_files(wider))
            pushed = tiermesh("policy", "push", str(moved), "--etcd", b.etcd, "--root", b.root)
            assert pushed.returncode == 0, pushed.stderr
            await _until(lambda: _snapshot_version(b) not in (None, before), 15, "b has the push")
            new_clusters = await _first_clusters(b, tmp_path / "svid")
            assert new_clusters != old_clusters
            first = asyncio.create_task(_first_clusters(a, tmp_path / "svid"))
            await asyncio.sleep(0.5)  # the connection waits in a's listen backlog
        finally:
            a.proc.send_signal(signal.SIGCONT)
        assert await asyncio.wait_for(first, 20) == new_clusters
        shown = fetch_status(a.admin, timeout_s=5)
        assert shown["freeze"]["freezes"] >= 1
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
