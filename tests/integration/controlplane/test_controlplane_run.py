"""``tiermesh controlplane run`` as a process: a node joins with a token, registers, and a
real Envoy holding that SVID receives a snapshot compiled from a pushed bundle; ``tiermesh
status`` shows it; SIGTERM stops it. And start-up failures that name what to fix."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import aetcd
import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.test_policy_push import write_policies
from tests.integration.compiler.tierbackend import TierBackend
from tests.integration.controlplane.conftest import open_session
from tests.support.authz import start_authz
from tiermesh.agents.identity.join_client import join
from tiermesh.controlplane.api import (
    NodeRegistration,
    SessionMessage,
    SessionReply,
    usage_month,
)
from tiermesh.controlplane.api.join import control_plane_dns_name, control_plane_spiffe_id
from tiermesh.controlplane.store import EtcdStore
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port
from tiermesh.xds import AdsTls, BootstrapSpec, render_bootstrap

pytestmark = [pytest.mark.etcd, pytest.mark.envoy]
TIERMESH = str(Path(sys.executable).with_name("tiermesh"))
TD = "mesh.example"
NODE = "edge-1"
STOP_BOUND_S = 10.0


def tiermesh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERMESH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Running:
    proc: subprocess.Popen[str]
    etcd: str
    root: str
    data_dir: Path
    ports: dict[str, int]
    ready_line: str

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}"

    def terminate(self) -> float:
        """SIGTERM; seconds until the process exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"not stopped {STOP_BOUND_S} s after SIGTERM:\n{err}") from None
        return time.monotonic() - started


def _lines(stream: Any, out: Queue[str]) -> None:
    for line in stream:
        out.put(line)


_PORT_ATTEMPTS = 3


def start_plane(
    tmp_path: Path, etcd: str, *extra: str, ready_s: float = 30, root: str | None = None
) -> Running:
    """A started ``tiermesh controlplane run`` (under key ``root``, default a new one). Its
    ports are picked free, then bound by the child: when another process took one in
    between (other test runs on the machine), it starts again on new ports."""
    root = root or f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        try:
            return _start_plane(tmp_path, etcd, extra, ready_s, attempt, root)
        except _PortTaken:
            if attempt == _PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class _PortTaken(AssertionError):
    pass


def _start_plane(
    tmp_path: Path, etcd: str, extra: tuple[str, ...], ready_s: float, attempt: int, root: str
) -> Running:
    ports = {name: free_port() for name in ("ads", "node", "join", "admin")}
    secret = tmp_path / "ca-passphrase"
    secret.write_text("correct horse battery staple\n")
    data_dir = tmp_path / ("cp-data" if attempt == 1 else f"cp-data-{attempt}")
    command = [
        TIERMESH, "controlplane", "run", "--etcd", etcd, "--trust-domain", TD,
        "--data-dir", str(data_dir), "--ca-passphrase-file", str(secret),
        "--listen", f"127.0.0.1:{ports['ads']}", "--node-api", f"127.0.0.1:{ports['node']}",
        "--join", f"127.0.0.1:{ports['join']}", "--admin", f"127.0.0.1:{ports['admin']}",
        "--root", root, "--lease-ttl", "3", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: Queue[str] = Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        try:
            return Running(proc, etcd, root, data_dir, ports, lines.get(timeout=0.2))
        except Empty:
            if proc.poll() is not None and lines.empty():
                break  # exited before it was ready
    proc.kill()
    _, err = proc.communicate(timeout=10)
    failure = _PortTaken if "address already in use" in err else AssertionError
    raise failure(f"control plane not ready in {ready_s}s:\n{err}")


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture
def plane(tmp_path: Path, etcd: EtcdServer) -> Iterator[Running]:
    running = start_plane(tmp_path, etcd.endpoint)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
        running.proc.communicate(timeout=10)


def request(listener: int) -> tuple[int, str | None]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{listener}/v1/chat/completions",
        data=b"{}",
        headers={
            "content-type": "application/json",
            "x-tiermesh-tenant": "acme",
            "x-tiermesh-task": "classify",
            "x-tiermesh-sensitivity": "public",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return int(response.status), response.headers.get("x-tiermesh-backend")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def read_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def eventually(check: Any, limit_s: float, what: str) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"not {what} within {limit_s}s")


async def test_a_joined_node_registers_and_its_envoy_gets_the_pushed_bundle(
    plane: Running, tmp_path: Path
) -> None:
    assert "control plane ready" in plane.ready_line
    key_file = plane.data_dir / "server-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600

    # An operator admits the node; the node joins and gets its SVID.
    token = tiermesh("token", "create", "--node-id", NODE, "--etcd", plane.etcd,
                     "--root", plane.root)  # fmt: skip
    assert token.returncode == 0, token.stderr
    first_bundle = (plane.data_dir / "bundle.pem").read_bytes()
    key = ec.generate_private_key(ec.SECP256R1())
    chain, bundle = await join(
        f"127.0.0.1:{plane.ports['join']}",
        token.stdout.strip(),
        key,
        trust_bundle_pem=first_bundle,
        server_name=control_plane_dns_name(TD),
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    # The node registers itself over mTLS with that SVID.
    listener = free_port()
    credentials = grpc.ssl_channel_credentials(bundle, key_pem, chain)
    options = [("grpc.ssl_target_name_override", control_plane_dns_name(TD))]
    backends = {name: TierBackend(name) for name in ("edge", "gpu", "cloud")}
    # The node's request policy: it registers the port, so its app listener runs ext_authz.
    authz = await asyncio.to_thread(start_authz, tmp_path / "decisions")
    envoy: EnvoyProcess | None = None
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{plane.ports['node']}", credentials, options=options
    ) as channel:
        session = open_session(channel)
        try:
            await session.write(
                SessionMessage(
                    registration=NodeRegistration(
                        node_id=NODE,
                        tier="local",
                        region="eu-west",
                        residency=("eu",),
                        app_port=listener,
                        endpoints=({"name": f"{NODE}.llama", "host": "127.0.0.1", "port": 1},),
                        authz_port=authz.port,
                    )
                )
            )
            reply = await session.read()
            assert isinstance(reply, SessionReply)
            assert reply.spiffe_id == f"spiffe://{TD}/node/{NODE}"

            # A bundle is pushed; a real Envoy holding the SVID fetches its snapshot.
            policies = write_policies(
                tmp_path / "policies", {n: b.port for n, b in backends.items()}
            )
            pushed = await asyncio.to_thread(
                tiermesh,
                "policy",
                "push",
                str(policies),
                "--etcd",
                plane.etcd,
                "--root",
                plane.root,
            )
            assert pushed.returncode == 0, pushed.stderr
            files = tmp_path / "svid"
            files.mkdir()
            (files / "chain.pem").write_bytes(chain)
            (files / "key.pem").write_bytes(key_pem)
            (files / "key.pem").chmod(0o600)
            (files / "bundle.pem").write_bytes(bundle)
            tls = AdsTls(
                cert_chain=str(files / "chain.pem"),
                private_key=str(files / "key.pem"),
                trusted_ca=str(files / "bundle.pem"),
                server_san=control_plane_spiffe_id(TD),
            )
            spec = BootstrapSpec(
                node_id=NODE, xds_host="127.0.0.1", xds_port=plane.ports["ads"],
                admin_port=free_port(), tls=tls,
            )  # fmt: skip
            envoy = EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE)
            envoy.start()
            status, backend = await eventually(
                lambda: (r := request(listener))[0] == 200 and r, 30, "routed through Envoy"
            )
            assert (status, backend) == (200, "edge")

            # tiermesh status shows the node, its app URL and ACKed versions.
            def acked() -> dict[str, Any] | None:
                shown = tiermesh("status", "--admin", plane.admin, "--json", timeout=20)
                assert shown.returncode == 0, shown.stderr
                document = json.loads(shown.stdout)
                (node,) = [n for n in document["nodes"] if n["id"] == NODE]
                types = node["xds"]["types"]
                done = types and all(t["acked"] and t["acked"] == t["sent"] for t in types.values())
                return document if done else None

            document = await eventually(acked, 15, "every type ACKed")
            (node,) = document["nodes"]
            assert node["inference_url"] == f"http://127.0.0.1:{listener}"
            assert node["spiffe_id"] == f"spiffe://{TD}/node/{NODE}"
            assert node["registered"] is True
            assert node["xds"]["connected"] is True
            assert {"listeners", "routes", "clusters"} <= set(node["xds"]["types"])
            assert node["snapshot"]["routes"] > 0
            assert node["snapshot"]["clusters"] >= 3
            assert document["bundle"]["revision"] == 1
            assert document["reconcile"]["last_error"] is None

            table = tiermesh("status", "--admin", plane.admin, timeout=20)
            assert table.returncode == 0, table.stderr
            assert NODE in table.stdout
            assert f"127.0.0.1:{listener}" in table.stdout

            metrics = await asyncio.to_thread(
                lambda: (
                    __import__("urllib.request")
                    .request.urlopen(plane.admin + "/metrics", timeout=5)
                    .read()
                    .decode()
                )
            )
            assert "tiermesh_registry_sessions" in metrics
            assert "tiermesh_xds_acks_total" in metrics
        finally:
            session.cancel()
            if envoy is not None:
                await asyncio.to_thread(envoy.stop)
            for server in backends.values():
                server.stop()
            await asyncio.to_thread(authz.close)

    took = plane.terminate()
    assert plane.proc.returncode == 0
    assert took < STOP_BOUND_S
    _, err = plane.proc.communicate(timeout=5)
    assert "control plane stopped" in err


async def test_spend_counted_before_monthly_budgets_is_kept_across_the_upgrade(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    """A counter an older control plane kept (``usage/<tenant>``) is this month's spend
    once the new one starts, not forgotten (which would hand the tenant a fresh budget)."""
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    host, port = etcd.endpoint.rsplit(":", 1)
    legacy = aetcd.Client(host=host, port=int(port))
    try:
        await legacy.put(f"{root}usage/acme".encode(), b'{"tokens": 12, "cost_micro": 3400000}')
    finally:
        await legacy.close()
    running = start_plane(tmp_path, etcd.endpoint, root=root)
    try:
        async with EtcdStore(etcd.endpoint, root=root) as store:
            month = usage_month(dt.datetime.now(dt.UTC))
            # Leader work: done at the start of the replica's first term, soon after ready.
            for _ in range(50):
                usage = await store.get_usage("acme", month=month)
                if usage.tokens:
                    break
                await asyncio.sleep(0.1)
            assert (usage.tokens, usage.cost_micro) == (12, 3_400_000)
            keys = [entry.key for entry in (await store.read_prefix("usage/")).entries]
            assert keys == [f"usage/{month}/acme"]
    finally:
        running.proc.kill()
        running.proc.communicate(timeout=10)


def test_unreachable_etcd_is_named(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    started = time.monotonic()
    result = tiermesh(
        "controlplane", "run", "--etcd", dead, "--trust-domain", TD,
        "--data-dir", str(tmp_path / "d"), "--ca-passphrase-file", str(secret),
        "--listen", "127.0.0.1:0", "--node-api", "127.0.0.1:0", "--join", "127.0.0.1:0",
        "--admin", "127.0.0.1:0",
    )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot reach etcd at {dead}" in result.stderr
    assert time.monotonic() - started < 30


def test_a_port_in_use_is_named(tmp_path: Path, etcd: EtcdServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        secret = tmp_path / "secret"
        secret.write_text("s3cret")
        result = tiermesh(
            "controlplane", "run", "--etcd", etcd.endpoint, "--trust-domain", TD,
            "--data-dir", str(tmp_path / "d"), "--ca-passphrase-file", str(secret),
            "--root", f"/test-{uuid.uuid4().hex}/tiermesh/v1/",
            "--listen", f"127.0.0.1:{port}", "--node-api", "127.0.0.1:0",
            "--join", "127.0.0.1:0", "--admin", "127.0.0.1:0",
        )  # fmt: skip
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "--listen" in result.stderr
    assert "in use" in result.stderr


def test_status_without_a_control_plane_says_where_it_looked() -> None:
    admin = f"http://127.0.0.1:{free_port()}"
    result = tiermesh("status", "--admin", admin, "--json")
    assert result.returncode == 1
    assert admin in result.stderr
