"""Node A's restricted request reaches node B's model server over mTLS, with certificates
from each node's own local SDS server and config compiled from plans (both app listeners
behind the real request policy, each node with its own ext_authz server and decision log);
B's inbound listener runs B's ext_authz on every request, which decides and records it as
a mesh hop (the peer's SPIFFE ID, the tenant A set). A peer with the wrong SPIFFE ID, a
client without a certificate, a node of the trust domain whose plan does not call B, or
the cloud gateway (valid SVIDs of the same CA), gets nowhere; a request B's policy denies
never reaches B's model server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import socket
import ssl
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.authz.harness import AuthzThread
from tests.integration.compiler.conftest import NODE, Reply, eventually, small_catalog
from tests.integration.compiler.tierbackend import TierBackend
from tests.support.authz import authz_settings, start_authz
from tests.support.xdsthread import XdsThread
from tests.unit.agent_identity.casource import TRUST_DOMAIN, CaSource, make_ca
from tests.unit.compiler.plans import EDGE_NODE, evaluate_plan
from tiermesh.agents.decisionlog import read_spool
from tiermesh.agents.identity import LocalSdsServer, SvidRotator, SvidStore, with_sds_cluster
from tiermesh.controlplane.api import Catalog, DecisionRecord, Plan, RegisteredNode
from tiermesh.controlplane.identity import LocalCertificateAuthority
from tiermesh.controlplane.model import MeshTlsSettings, NodeSettings
from tiermesh.controlplane.reconciler import CompileCache, default_compiler
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.store.memory import MemoryStore
from tiermesh.controlplane.verify import verify_snapshot
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, render_bootstrap

pytestmark = pytest.mark.envoy

GPU_NODE = "gpu-1"
GPU_ID = f"spiffe://{TRUST_DOMAIN}/node/{GPU_NODE}"
EDGE_ID = f"spiffe://{TRUST_DOMAIN}/node/{NODE}"
CLOUD_NODE = "cloud-gw-1"
IDLE_NODE = "edge-2"
"""A registered local node whose plan does not call B: a candidate, never admitted."""


def _registered(node_id: str, tier: str) -> RegisteredNode:
    return RegisteredNode(
        node_id=node_id,
        tier=tier,  # type: ignore[arg-type]
        region="eu-west",
        app_port=10000,
        spiffe_id=f"spiffe://{TRUST_DOMAIN}/node/{node_id}",
        registered_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


CANDIDATES = NodeDirectory(MemoryStore(), "", trust_domain=TRUST_DOMAIN).mesh_callers(
    GPU_NODE,
    {
        NODE: _registered(NODE, "local"),
        IDLE_NODE: _registered(IDLE_NODE, "local"),
        GPU_NODE: _registered(GPU_NODE, "private"),
        CLOUD_NODE: _registered(CLOUD_NODE, "cloud"),
    },
)
"""Whom the registry lets node B admit at most: the other non-cloud nodes (never the
cloud gateway, nor B itself). The compiler narrows it to the callers in the plans."""
RESTRICTED = {
    "x-tiermesh-tenant": "acme",
    "x-tiermesh-sensitivity": "restricted",
    "x-tiermesh-task": "reasoning",
}


def mesh_catalog(ports: dict[str, int], inbound: int) -> Catalog:
    """The small catalog with ``gpu`` behind node B's inbound mTLS listener."""
    document = small_catalog(ports).model_dump(mode="json", exclude_none=True)
    for backend in document["backends"]:
        if backend["name"] == "gpu":
            backend["endpoint"] = {"host": "127.0.0.1", "port": inbound, "tls": True}
            backend["spiffe_id"] = GPU_ID
            backend["max_complexity"] = 5
    return Catalog.model_validate(document)


@dataclass
class Node:
    envoy: EnvoyProcess
    app_port: int
    store: SvidStore


@dataclass
class TwoNodes:
    edge: Node
    gpu: Node
    backend: TierBackend
    inbound: int
    ca: LocalCertificateAuthority
    catalog: Catalog
    snapshots: dict[str, Any]
    admitted: tuple[str, ...]
    edge_authz: AuthzThread
    gpu_authz: AuthzThread

    def request(self, headers: dict[str, str]) -> Reply:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.edge.app_port}/v1/chat/completions",
            data=b"{}",
            headers={"content-type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Reply(
                    int(response.status),
                    response.headers.get("x-tiermesh-backend"),
                    None,
                    response.read().decode(),
                    0.0,
                )
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, None, None, exc.read().decode(), 0.0)


def counter(envoy: EnvoyProcess, name: str) -> int:
    stats = envoy.admin_json("/stats?format=json")["stats"]
    return sum(int(s.get("value", 0)) for s in stats if s.get("name") == name)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tm-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _start_sds(
    ca: LocalCertificateAuthority, node_id: str, path: Path
) -> tuple[SvidStore, LocalSdsServer]:
    store = SvidStore()
    await SvidRotator(store, CaSource(ca, node_id=node_id)).rotate_now()
    sds = LocalSdsServer(store, f"unix:{path}")
    await sds.start()
    return store, sds


async def _two_nodes(tmp_path: Path, sock_dir: Path, gpu_presents: str) -> AsyncIterator[TwoNodes]:
    ca = make_ca()
    backend = TierBackend("gpu")
    others = {name: TierBackend(name) for name in ("edge", "cloud")}
    xds = XdsThread()
    # Each node runs its own request policy server and decision log.
    edge_authz = start_authz(tmp_path / "edge-decisions")
    gpu_authz = start_authz(tmp_path / "gpu-decisions")
    edge_store, edge_sds = await _start_sds(ca, NODE, sock_dir / "edge.sock")
    gpu_store, gpu_sds = await _start_sds(ca, gpu_presents, sock_dir / "gpu.sock")
    try:
        inbound = free_port()
        ports = {"gpu": backend.port, **{n: b.port for n, b in others.items()}}
        catalog = mesh_catalog(ports, inbound)
        plans: dict[str, Plan] = {
            NODE: evaluate_plan(catalog),
            GPU_NODE: evaluate_plan(catalog, {**EDGE_NODE, "id": GPU_NODE, "tier": "private"}),
            # Its plan reaches the GPU backend on loopback, not over the mesh: no caller.
            IDLE_NODE: evaluate_plan(small_catalog(ports), {**EDGE_NODE, "id": IDLE_NODE}),
            # Its plan pins the GPU backend, but a cloud node is never a caller.
            CLOUD_NODE: evaluate_plan(catalog, {**EDGE_NODE, "id": CLOUD_NODE, "tier": "cloud"}),
        }
        app = {NODE: free_port(), GPU_NODE: free_port()}
        settings = {
            NODE: NodeSettings(
                app_port=app[NODE],
                authz=authz_settings(edge_authz),
                mesh=MeshTlsSettings(
                    inbound_port=free_port(),
                    model_port=others["edge"].port,
                    trust_domain=TRUST_DOMAIN,
                    inbound_address="127.0.0.1",
                ),
            ),
            GPU_NODE: NodeSettings(
                app_port=app[GPU_NODE],
                authz=authz_settings(gpu_authz),
                mesh=MeshTlsSettings(
                    inbound_port=inbound,
                    model_port=backend.port,
                    trust_domain=TRUST_DOMAIN,
                    local_backends=("gpu",),
                    allowed_peers=CANDIDATES,
                    inbound_address="127.0.0.1",
                ),
            ),
        }
        # As the control plane compiles: every plan first, then each node, verified.
        compiler = default_compiler(settings.__getitem__, cache=CompileCache(0)).with_plans(plans)
        admitted = compiler.settings_for(GPU_NODE).mesh.allowed_peers  # type: ignore[union-attr]
        snapshots = {node: compiler(plans[node], catalog) for node in (NODE, GPU_NODE)}
        for node, snapshot in snapshots.items():
            xds.set_snapshot(node, snapshot)

        def boot(node: str, sds: LocalSdsServer) -> dict[str, Any]:
            spec = BootstrapSpec(
                node_id=node, xds_host="127.0.0.1", xds_port=xds.port, admin_port=free_port()
            )
            return with_sds_cluster(render_bootstrap(spec), sds.address)

        with EnvoyProcess(boot(GPU_NODE, gpu_sds), workdir=tmp_path, name=GPU_NODE) as gpu:
            await asyncio.to_thread(gpu.wait_ready, 20)
            # Node A's first health check of B must find B's inbound listener up (the
            # checks are a minute apart here).
            await asyncio.to_thread(eventually, lambda: _accepts(inbound), 20, "B inbound up")
            edge = EnvoyProcess(boot(NODE, edge_sds), workdir=tmp_path, name=NODE)
            with edge:
                await asyncio.to_thread(edge.wait_ready, 20)
                # Node A's own model is down: restricted traffic moves on to node B.
                others["edge"].stop()
                yield TwoNodes(
                    Node(edge, app[NODE], edge_store),
                    Node(gpu, app[GPU_NODE], gpu_store),
                    backend,
                    inbound,
                    ca,
                    catalog,
                    snapshots,
                    admitted,
                    edge_authz,
                    gpu_authz,
                )
    finally:
        await edge_sds.stop()
        await gpu_sds.stop()
        xds.close()
        await asyncio.to_thread(edge_authz.close)
        await asyncio.to_thread(gpu_authz.close)
        backend.stop()
        for other in others.values():
            other.stop()


@pytest.fixture
async def nodes(tmp_path: Path, sock_dir: Path) -> AsyncIterator[TwoNodes]:
    async for two in _two_nodes(tmp_path, sock_dir, GPU_NODE):
        yield two


@pytest.fixture
async def impostor(tmp_path: Path, sock_dir: Path) -> AsyncIterator[TwoNodes]:
    """Node B holds the SVID of another node id (same CA, same trust domain)."""
    async for two in _two_nodes(tmp_path, sock_dir, "other-1"):
        yield two


async def test_a_restricted_request_reaches_the_other_node_over_mtls(nodes: TwoNodes) -> None:
    assert verify_snapshot(nodes.snapshots[NODE], nodes.catalog) == []
    reply = await asyncio.to_thread(
        eventually,
        lambda: (r := nodes.request(RESTRICTED)).status == 200 and r,
        20,
        "restricted request answered",
    )
    assert reply.backend == "gpu"
    assert nodes.backend.models, "node B's model server never saw the request"
    handshakes = await asyncio.to_thread(
        counter, nodes.gpu.envoy, f"listener.127.0.0.1_{nodes.inbound}.ssl.handshake"
    )
    assert handshakes >= 1
    # Node A presented its SVID: B's listener saw a client certificate.
    no_cert = await asyncio.to_thread(
        counter, nodes.gpu.envoy, f"listener.127.0.0.1_{nodes.inbound}.ssl.no_certificate"
    )
    assert no_cert == 0


async def test_a_peer_with_another_spiffe_id_is_refused_at_tls(impostor: TwoNodes) -> None:
    await asyncio.sleep(1.0)  # both Envoys have their secrets and clusters
    replies = [await asyncio.to_thread(impostor.request, RESTRICTED) for _ in range(3)]
    assert [r.status for r in replies] == [503, 503, 503]
    assert impostor.backend.models == [], "the request reached the wrong node's model"
    stats = await asyncio.to_thread(impostor.edge.envoy.admin_json, "/stats?format=json")
    failed = {
        s["name"]: s.get("value", 0)
        for s in stats["stats"]
        if s.get("name", "").endswith("ssl.fail_verify_san")
    }
    assert sum(failed.values()) >= 1, failed


async def test_a_client_without_a_certificate_cannot_reach_the_inbound_listener(
    nodes: TwoNodes,
) -> None:
    await asyncio.to_thread(
        eventually, lambda: nodes.request(RESTRICTED).status == 200, 20, "mesh up"
    )
    seen = len(nodes.backend.models)
    bundle = nodes.ca.bundle().to_pem().decode()

    def plain_tls() -> str:
        context = ssl.create_default_context(cadata=bundle)
        context.check_hostname = False
        try:
            with (
                socket.create_connection(("127.0.0.1", nodes.inbound), timeout=5) as raw,
                context.wrap_socket(raw) as tls,
            ):
                tls.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
                )
                return tls.recv(1024).decode(errors="replace")
        except (ssl.SSLError, ConnectionError) as exc:
            return f"refused: {exc!r}"

    answer = await asyncio.to_thread(plain_tls)
    assert answer.startswith("refused") or answer == "", answer
    assert len(nodes.backend.models) == seen


def _svid_files(ca: LocalCertificateAuthority, node_id: str, where: Path) -> tuple[Path, Path]:
    """A valid SVID of ``node_id`` from the mesh's own CA, as PEM chain and key files."""
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue_for_key(key.public_key(), node_id)
    chain, key_file = where / f"{node_id}.pem", where / f"{node_id}.key"
    chain.write_bytes(issued.chain_pem())
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return chain, key_file


ACME_PUBLIC = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}


def _call_inbound(
    nodes: TwoNodes,
    svid: tuple[Path, Path],
    headers: dict[str, str] | None = None,
    body: bytes = b"{}",
) -> str:
    """One request straight to node B's inbound listener, presenting ``svid``: the
    answer's head and body (until the server closes, at most 64 KiB), or ``refused: …``."""
    context = ssl.create_default_context(cadata=nodes.ca.bundle().to_pem().decode())
    context.check_hostname = False
    context.load_cert_chain(*svid)
    lines = [f"{k}: {v}" for k, v in (ACME_PUBLIC if headers is None else headers).items()]
    head = "\r\n".join(
        [
            "POST /v1/chat/completions HTTP/1.1",
            "host: x",
            "connection: close",
            "content-type: application/json",
            f"content-length: {len(body)}",
            *lines,
        ]
    )
    try:
        with (
            socket.create_connection(("127.0.0.1", nodes.inbound), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(head.encode() + b"\r\n\r\n" + body)
            answer = b""
            for _ in range(64):
                chunk = tls.recv(1024)
                if not chunk:
                    break
                answer += chunk
            return answer.decode(errors="replace")
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {exc!r}"


def _header(answer: str, name: str) -> str | None:
    head = answer.split("\r\n\r\n", 1)[0]
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _records(authz: AuthzThread) -> list[DecisionRecord]:
    return [spooled.record for spooled in read_spool(authz.spool)]


async def test_only_the_nodes_whose_plans_call_b_get_through_not_the_cloud_gateway(
    nodes: TwoNodes, tmp_path: Path
) -> None:
    assert (EDGE_ID, f"spiffe://{TRUST_DOMAIN}/node/{IDLE_NODE}") == CANDIDATES
    assert nodes.admitted == (EDGE_ID,)
    await asyncio.to_thread(
        eventually, lambda: nodes.request(RESTRICTED).status == 200, 20, "mesh up"
    )
    seen = len(nodes.backend.models)

    edge = await asyncio.to_thread(_call_inbound, nodes, _svid_files(nodes.ca, NODE, tmp_path))
    assert edge.startswith("HTTP/1.1 200"), edge
    assert len(nodes.backend.models) == seen + 1

    # Valid SVIDs of the same trust domain, from the same CA: a registered node whose plan
    # does not call B, and the cloud gateway: refused at the handshake.
    for outsider in (IDLE_NODE, CLOUD_NODE):
        svid = _svid_files(nodes.ca, outsider, tmp_path)
        answers = [await asyncio.to_thread(_call_inbound, nodes, svid) for _ in range(2)]
        assert all(a.startswith("refused") or a == "" for a in answers), (outsider, answers)
    assert len(nodes.backend.models) == seen + 1, "an outsider reached B's model"
    failed = await asyncio.to_thread(
        counter, nodes.gpu.envoy, f"listener.127.0.0.1_{nodes.inbound}.ssl.fail_verify_san"
    )
    assert failed >= 4


async def test_a_mesh_hop_is_decided_and_recorded_on_the_receiving_node(nodes: TwoNodes) -> None:
    reply = await asyncio.to_thread(
        eventually,
        lambda: (r := nodes.request(RESTRICTED)).status == 200 and r,
        20,
        "restricted request answered",
    )
    assert reply.backend == "gpu"
    sent = {str(r.decision_id): r for r in _records(nodes.edge_authz)}
    hops = [r for r in _records(nodes.gpu_authz) if r.input.get("peer")]
    assert hops, "node B recorded no mesh hop"
    hop = hops[-1]
    assert hop.input["peer"]["spiffe_id"] == EDGE_ID
    assert hop.input["tenant"] == "acme"  # as node A's ext_authz set it
    assert "credential" not in hop.input
    assert hop.result["outcome"] == "allow"
    assert hop.result["sensitivity"] == "restricted"
    # The link to node A's record of the same request; A's records are no mesh hops.
    assert hop.input["peer"]["decision_id"] in sent
    assert all("peer" not in r.input for r in sent.values())
    # B's model server saw B's decision id, not A's.
    assert nodes.backend.requests[-1]["x-tiermesh-decision-id"] == str(hop.decision_id)


async def test_a_mesh_hop_b_denies_never_reaches_bs_model(nodes: TwoNodes, tmp_path: Path) -> None:
    await asyncio.to_thread(
        eventually, lambda: nodes.request(RESTRICTED).status == 200, 20, "mesh up"
    )
    seen = len(nodes.backend.models)
    svid = _svid_files(nodes.ca, NODE, tmp_path)
    # No tenant: the sending node would have set one; B's policy refuses.
    answer = await asyncio.to_thread(
        _call_inbound, nodes, svid, {"x-tiermesh-sensitivity": "public"}
    )
    assert answer.startswith("HTTP/1.1 403"), answer
    assert "no tenant" in answer
    assert len(nodes.backend.models) == seen
    denied = _records(nodes.gpu_authz)[-1]
    assert (denied.result["outcome"], denied.result["status"]) == ("deny", 403)
    assert denied.input["peer"]["spiffe_id"] == EDGE_ID
    assert str(denied.decision_id) == _header(answer, "x-tiermesh-decision-id")


async def test_what_a_peer_forges_is_decided_over_and_recorded(
    nodes: TwoNodes, tmp_path: Path
) -> None:
    await asyncio.to_thread(
        eventually, lambda: nodes.request(RESTRICTED).status == 200, 20, "mesh up"
    )
    forged = str(uuid.uuid4())
    prompt = "mail jane.doe@example.com the card 4111 1111 1111 1111"
    body = json.dumps({"messages": [{"role": "user", "content": prompt}]}).encode()
    answer = await asyncio.to_thread(
        _call_inbound,
        nodes,
        _svid_files(nodes.ca, NODE, tmp_path),
        {
            **ACME_PUBLIC,  # personal data labelled public
            "x-tiermesh-budget": "exhausted",
            "x-tiermesh-decision-id": forged,
            "x-tiermesh-cascade-token": "guessed-token-value-0000",
            "authorization": "Bearer tmk_0123456789abcdef_notakey",
        },
        body,
    )
    # A local model may answer restricted data; the record says it was restricted.
    assert answer.startswith("HTTP/1.1 200"), answer
    record = _records(nodes.gpu_authz)[-1]
    assert record.result["sensitivity"] == "restricted"
    assert record.result["floor"]["sensitivity"] == "restricted"
    assert record.input["peer"] == {"spiffe_id": EDGE_ID, "decision_id": forged}
    assert prompt not in json.dumps(record.input)
    seen = nodes.backend.requests[-1]
    assert seen["x-tiermesh-decision-id"] == str(record.decision_id) != forged
    assert seen["x-tiermesh-sensitivity"] == "restricted"
    for gone in ("x-tiermesh-budget", "x-tiermesh-cascade-token", "authorization"):
        assert gone not in seen, gone


async def test_the_callers_health_checks_pass_as_probes(nodes: TwoNodes) -> None:
    """Envoy's health checks carry no tenant: B decides them as probes, so A counts B up."""
    await asyncio.to_thread(
        eventually,
        lambda: counter(nodes.edge.envoy, "cluster.gpu.health_check.success") >= 1,
        20,
        "A's health check of B passed",
    )
    assert (
        await asyncio.to_thread(counter, nodes.edge.envoy, "cluster.gpu.health_check.failure") == 0
    )
    probes = [r for r in _records(nodes.gpu_authz) if r.input.get("peer", {}).get("probe")]
    assert probes, "B recorded no probe"
    assert probes[0].input["peer"]["spiffe_id"] == EDGE_ID
    assert probes[0].input["request"] == {"method": "GET", "path": "/health"}
    assert (probes[0].result["outcome"], probes[0].result["policy_answer"]) == ("allow", None)
