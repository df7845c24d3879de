"""Certificates that rotate while control planes run, through real processes: ``tiermesh
controlplane run`` replicas on one etcd, a ``tiermesh agent run`` node whose real Envoy
holds an ADS stream to one of them.

1. A replica whose server certificate lives seconds renews it: new handshakes on every
   port (ADS, node API, join, audit) get the new serial, the data dir's files follow, and
   the node's agent and Envoy keep their session and ADS stream past the old certificate's
   end (a pushed bundle still reaches the Envoy over it).
2. A CA rollover started through one replica reaches another replica's servers without
   restarting it: it trusts SVIDs of the old and the new CA, issues from the new one, and
   the node renews its SVID there while its Envoy keeps its ADS stream.
3. ``tiermesh ca rotate`` (straight to etcd) reaches a running replica the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e.agent_support import AgentProc, NodePorts, join_token, node_yaml, push_demo
from tests.integration.controlplane.test_controlplane_run import (
    TD,
    Running,
    eventually,
    start_plane,
    tiermesh,
)
from tests.support.server_tls import accepts, presented
from tests.support.svids import issue_svid
from tiermesh.controlplane.api.join import control_plane_spiffe_id
from tiermesh.controlplane.audit import AuditStore
from tiermesh.controlplane.identity import CaGeneration
from tiermesh.controlplane.runtime import ControlPlane, ControlPlaneConfig, HostPort
from tiermesh.demo.catalog import DemoEndpoint
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port
from tiermesh.xds.bootstrap import XDS_CLUSTER

pytestmark = [pytest.mark.etcd, pytest.mark.envoy]
NODE = "edge-1"
PASSPHRASE = b"correct horse battery staple"  # what start_plane writes
WAIT_S = 20.0


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


def status(plane: Running) -> dict[str, Any]:
    with urllib.request.urlopen(plane.admin + "/status", timeout=5) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


def node_acked(plane: Running) -> dict[str, Any] | None:
    """The node's xds status once it is connected and every type it was sent is ACKed."""
    nodes = {n["id"]: n for n in status(plane)["nodes"]}
    node = nodes.get(NODE)
    if node is None or not node["xds"]["connected"]:
        return None
    types = node["xds"]["types"]
    done = types and all(t["acked"] and t["acked"] == t["sent"] for t in types.values())
    return node if done else None


def ads_connections(admin_port: int) -> tuple[int, int]:
    """(connections Envoy ever opened to the ADS cluster, its ADS connected state)."""
    url = f"http://127.0.0.1:{admin_port}/stats?format=json&filter=^(cluster.{XDS_CLUSTER}.upstream_cx_total|control_plane.connected_state)$"
    with urllib.request.urlopen(url, timeout=5) as response:
        stats = {s["name"]: s.get("value", 0) for s in json.loads(response.read())["stats"]}
    return (
        int(stats[f"cluster.{XDS_CLUSTER}.upstream_cx_total"]),
        int(stats["control_plane.connected_state"]),
    )


def tls_ports(plane: Running) -> dict[str, int]:
    audit = int(status(plane)["addresses"]["audit"].rsplit(":", 1)[1])
    ports = plane.ports
    return {"ads": ports["ads"], "node": ports["node"], "join": ports["join"], "audit": audit}


async def served_everywhere(
    plane: Running, ports: dict[str, int], roots: bytes, client: tuple[bytes, bytes]
) -> tuple[int, dt.datetime]:
    """The serial and end of the certificate the status names, once a new handshake on
    every port got it with no renewal in between (a renewal every few seconds may fall
    between two probes: then probe again, at most 5 times)."""
    for _ in range(5):
        before = status(plane)["identity"]["server_certificate"]
        shown = {
            name: (await asyncio.to_thread(presented, port, roots, client)).serial_number
            for name, port in ports.items()
        }
        after = status(plane)["identity"]["server_certificate"]
        if before["serial"] == after["serial"]:
            serial = int(before["serial"], 16)
            assert shown == dict.fromkeys(ports, serial)
            return serial, dt.datetime.fromisoformat(before["not_after"])
    raise AssertionError("the certificate changed under every probe")


def first_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def catalog() -> dict[str, DemoEndpoint]:
    return {
        "edge-smollm": DemoEndpoint(free_port(), node=NODE),
        "onprem-gpu": DemoEndpoint(free_port(), node="private-1"),
        "frontier-us": DemoEndpoint(free_port(), tls=True),
        "frontier-eu": DemoEndpoint(free_port(), tls=True),
    }


def start_agent(plane: Running, folder: Path) -> tuple[AgentProc, NodePorts]:
    """A bundle pushed, then the node joined through ``plane`` and ready."""
    push_demo(plane, folder / "policies-0", catalog())
    ports = NodePorts()
    token = join_token(plane, NODE, folder)
    config = node_yaml(folder / "node.yaml", plane, node_id=NODE, tier="local", ports=ports,
                       token=token, model=None)  # fmt: skip
    agent = AgentProc.start(config)
    agent.wait_ready()
    return agent, ports


async def push_reaches_node(plane: Running, folder: Path) -> None:
    """Push a bundle with other backends; wait until the node ACKed what it brought."""
    versions = (await eventually(lambda: node_acked(plane), WAIT_S, "ACKed"))["xds"]["types"]
    await asyncio.to_thread(push_demo, plane, folder, catalog())

    def pushed() -> bool:
        node = node_acked(plane)
        return node is not None and node["xds"]["types"] != versions

    await eventually(pushed, WAIT_S, "the pushed bundle ACKed")


async def followed(plane: Running, generation: int) -> dict[str, Any]:
    """The replica's identity status once it serves CA state ``generation``."""

    def serving() -> dict[str, Any] | None:
        identity: dict[str, Any] = status(plane)["identity"]
        return identity if identity["trust_bundle"]["generation"] == generation else None

    found: dict[str, Any] = await eventually(serving, WAIT_S, f"serving CA state {generation}")
    return found


def plan_signers(db: Path) -> list[tuple[dt.datetime, x509.Certificate]]:
    """Each plan record's time and the certificate of the key that signed it."""
    with AuditStore(db) as audit:
        chains = audit.signers()
        return [
            (stored.record.timestamp, first_of(chains[stored.signer]))
            for stored in audit.chain(control_plane_spiffe_id(TD))
        ]


def first_of(chain_pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain_pem.encode())[0]


def stop(plane: Running, agent: AgentProc | None) -> str:
    """Kill both; the control plane's log (stderr)."""
    if agent is not None and agent.proc.poll() is None:
        agent.kill()
    if plane.proc.poll() is None:
        plane.proc.kill()
    _, err = plane.proc.communicate(timeout=10)
    return err


async def test_a_short_lived_server_certificate_renews_under_a_running_node(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    plane = start_plane(tmp_path, etcd.endpoint, "--server-cert-ttl", "6")
    agent: AgentProc | None = None
    try:
        agent, node_ports = await asyncio.to_thread(start_agent, plane, tmp_path)
        await eventually(lambda: node_acked(plane), WAIT_S, "the node's Envoy ACKed its config")
        cx_before = await asyncio.to_thread(ads_connections, node_ports.admin)
        assert cx_before[1] == 1

        roots = (plane.data_dir / "bundle.pem").read_bytes()
        node_svid = (tmp_path / f"{NODE}-state" / "svid" / "svid.pem").read_bytes()
        node_key = (tmp_path / f"{NODE}-state" / "svid" / "svid_key.pem").read_bytes()
        client = (node_svid, node_key)
        ports = tls_ports(plane)
        first, first_end = await served_everywhere(plane, ports, roots, client)

        def renewed() -> int | None:
            serial = int(status(plane)["identity"]["server_certificate"]["serial"], 16)
            return serial if serial != first else None

        second = await eventually(renewed, WAIT_S, "renewed")
        now_served, _ = await served_everywhere(plane, ports, roots, client)
        assert now_served != first
        await eventually(
            lambda: first_cert(plane.data_dir / "server-chain.pem").serial_number != first,
            WAIT_S,
            "the chain file rewritten",
        )

        # Past the first certificate's end: the node's session and ADS stream are the ones
        # opened under it, and a bundle pushed now still reaches its Envoy over that stream.
        wait_s = (first_end - dt.datetime.now(dt.UTC)).total_seconds() + 0.5
        await asyncio.sleep(max(0.0, wait_s))
        await push_reaches_node(plane, tmp_path / "policies-1")
        assert await asyncio.to_thread(ads_connections, node_ports.admin) == cx_before
        # The plans recorded for that push are signed with a certificate valid then. They
        # are recorded after the reconcile published them, so they may land a moment after
        # the node serves the push.
        db = plane.data_dir / "audit.sqlite3"
        await eventually(lambda: len(plan_signers(db)) >= 2, WAIT_S, "the push's plans recorded")
        signed = await asyncio.to_thread(plan_signers, db)
        assert len(signed) >= 2
        assert signed[-1][0] > first_end
        for made, signer in signed:
            assert signer.not_valid_before_utc <= made <= signer.not_valid_after_utc
        assert await accepts(ports["node"], roots, client, TD)
        node = {n["id"]: n for n in status(plane)["nodes"]}[NODE]
        assert node["registered"] is True
        assert agent.proc.poll() is None
        assert status(plane)["identity"]["server_certificate"]["renewals"] >= 1
        assert second != first
    finally:
        log = await asyncio.to_thread(stop, plane, agent)
    assert f"server certificate renewed (renewal due): serial={second:x}" in log


def in_process_replica(plane: Running, folder: Path) -> ControlPlane:
    """A second replica of ``plane``'s mesh (same etcd, root and CA passphrase), in this
    process so that the test can start a CA rollover through it."""
    anywhere = HostPort("127.0.0.1", 0)
    return ControlPlane(
        ControlPlaneConfig(
            etcd=(plane.etcd,), trust_domain=TD, data_dir=folder, ca_passphrase=PASSPHRASE,
            root=plane.root, ads=anywhere, node_api=anywhere, join=anywhere, admin=anywhere,
        )
    )  # fmt: skip


def pem(generation: CaGeneration) -> bytes:
    return generation.root.public_bytes(serialization.Encoding.PEM)


async def test_a_rollover_through_one_replica_reaches_another_and_its_node(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    other = start_plane(tmp_path, etcd.endpoint, "--svid-ttl", "6")
    one = in_process_replica(other, tmp_path / "one-data")
    agent: AgentProc | None = None
    await one.start()
    try:
        agent, node_ports = await asyncio.to_thread(start_agent, other, tmp_path)
        await eventually(lambda: node_acked(other), WAIT_S, "the node's Envoy ACKed its config")
        cx_before = await asyncio.to_thread(ads_connections, node_ports.admin)
        old = one.ca.active
        old_svid = issue_svid(one.ca, "edge-2")
        before = status(other)["identity"]
        assert before["trust_bundle"] == {
            "generation": 1, "roots": [old.id], "signing_generation": old.id,
        }  # fmt: skip

        new = await one.rotate_ca()

        after = await followed(other, 2)
        assert after["trust_bundle"]["roots"] == [old.id, new.id]
        assert after["trust_bundle"]["signing_generation"] == new.id
        serial = int(after["server_certificate"]["serial"], 16)
        assert serial != int(before["server_certificate"]["serial"], 16)
        # Still signed by the old generation: a client holding only the old root (the
        # node before its next renewal) verifies it.
        assert after["server_certificate"]["issuer_generation"] == old.id
        new_svid = issue_svid(one.ca, "edge-3")
        ports = tls_ports(other)
        for name, port in ports.items():
            client = None if name == "join" else new_svid
            shown = await asyncio.to_thread(presented, port, pem(old), client)
            assert shown.serial_number == serial, name
        both = one.ca.bundle().to_pem()
        for name in ("ads", "node", "audit"):
            assert await accepts(ports[name], both, new_svid, TD), f"{name}: new CA refused"
            assert await accepts(ports[name], both, old_svid, TD), f"{name}: old CA refused"
        on_disk = x509.load_pem_x509_certificates((other.data_dir / "bundle.pem").read_bytes())
        assert {c.serial_number for c in on_disk} == {
            old.root.serial_number, new.root.serial_number,
        }  # fmt: skip

        # The node renews its SVID at that replica (half of 6 s) and gets one of the new CA.
        chain_file = tmp_path / f"{NODE}-state" / "svid" / "svid.pem"

        def renewed_from_new_ca() -> bool:
            chain = x509.load_pem_x509_certificates(chain_file.read_bytes())
            return len(chain) > 1 and chain[1] == new.intermediate

        await eventually(renewed_from_new_ca, WAIT_S, "the node renewed from the new CA")
        # Its Envoy kept the ADS stream it opened before the rollover; a bundle pushed now
        # reaches it over that stream.
        await push_reaches_node(other, tmp_path / "policies-1")
        assert await asyncio.to_thread(ads_connections, node_ports.admin) == cx_before
        assert other.proc.poll() is None  # never restarted
        assert agent.proc.poll() is None
    finally:
        await one.stop()
        log = await asyncio.to_thread(stop, other, agent)
    assert "(CA state loaded from the store): serial=" in log
    assert "trust bundle generation 2 (2 roots)" in log


async def test_tiermesh_ca_rotate_reaches_a_running_replica(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    plane = start_plane(tmp_path, etcd.endpoint)
    try:
        before = status(plane)["identity"]
        secret = tmp_path / "ca-passphrase"  # what start_plane wrote
        wrong = tmp_path / "wrong"
        wrong.write_text("not the passphrase\n")
        common = ("--etcd", plane.etcd, "--root", plane.root, "--trust-domain", TD)
        refused = await asyncio.to_thread(
            tiermesh, "ca", "rotate", *common, "--ca-passphrase-file", str(wrong)
        )
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: ")
        assert "passphrase" in refused.stderr

        rotated = await asyncio.to_thread(
            tiermesh, "ca", "rotate", *common, "--ca-passphrase-file", str(secret)
        )
        assert rotated.returncode == 0, rotated.stderr
        new_id = rotated.stdout.strip()
        assert "rolled over (state 2)" in rotated.stderr

        after = await followed(plane, 2)
        assert after["trust_bundle"]["roots"] == [*before["trust_bundle"]["roots"], new_id]
        assert after["trust_bundle"]["signing_generation"] == new_id
        assert after["server_certificate"]["serial"] != before["server_certificate"]["serial"]
        shown = await asyncio.to_thread(tiermesh, "status", "--admin", plane.admin)
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        assert f"server certificate {after['server_certificate']['serial'][:12]}… until" in text
        assert "trust bundle of CA state 2, 2 root(s)" in text
        assert plane.proc.poll() is None
    finally:
        await asyncio.to_thread(stop, plane, None)


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--server-cert-ttl", "0.5", "server certificate lifetime must be 1 s to 30 days"),
        ("--svid-ttl", "100000", "SVID lifetime must be 1 s to 24 hours"),
    ],
)
def test_a_lifetime_out_of_range_is_named(
    tmp_path: Path, option: str, value: str, named: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    result = tiermesh(
        "controlplane", "run", "--etcd", f"127.0.0.1:{free_port()}", "--trust-domain", TD,
        "--data-dir", str(tmp_path / "d"), "--ca-passphrase-file", str(secret), option, value,
    )  # fmt: skip
    assert result.returncode == 2
    assert named in " ".join(result.stderr.split())
