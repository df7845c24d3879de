"""A real Envoy fetches its config over mTLS with its SVID; one with another node's is refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.resources import mesh
from tiermesh.controlplane.api.join import control_plane_spiffe_id
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.server_cert import issue_server_certificate
from tiermesh.controlplane.identity.xds_auth import server_credentials, spiffe_node_authorizer
from tiermesh.demo.standin import StandinBackend
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import AdsServer, AdsTls, BootstrapSpec, SnapshotCache, render_bootstrap
from tiermesh.xds import start_server as start_ads
from tiermesh.xds.status import NodeStatus

pytestmark = pytest.mark.envoy
TD = "mesh.example"
NODE = "edge-1"
T = TypeVar("T")


class SecureXds:
    """CA + mTLS ADS server (SPIFFE node authorizer) on a background event loop."""

    def __init__(self) -> None:
        self.ca = LocalCertificateAuthority.create(CaConfig(TD))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cache: SnapshotCache = self._call(SnapshotCache)
        self.ads: AdsServer = self._call(
            lambda: AdsServer(self.cache, authorize=spiffe_node_authorizer(TD))
        )
        certificate = issue_server_certificate(self.ca, now=dt.datetime.now(dt.UTC))
        credentials = server_credentials(certificate, self.ca.bundle())
        self.server: grpc.aio.Server
        self.server, self.port = self._run(
            start_ads(self.ads, "127.0.0.1:0", credentials=credentials)
        )

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def _call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self._run(run())  # type: ignore[no-any-return]

    def status(self, node_id: str) -> NodeStatus | None:
        return self._call(lambda: self.ads.status.get(node_id))

    def write_svid(self, node_id: str, folder: Path) -> AdsTls:
        """Issue an SVID for ``node_id`` and write chain, key and bundle as Envoy's files."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        folder.mkdir(parents=True, exist_ok=True)
        paths = {name: folder / f"{name}.pem" for name in ("chain", "key", "bundle")}
        paths["chain"].write_bytes(self.ca.issue(csr, node_id).chain_pem())
        paths["key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        paths["key"].chmod(0o600)
        paths["bundle"].write_bytes(self.ca.bundle().to_pem())
        return AdsTls(
            cert_chain=str(paths["chain"]),
            private_key=str(paths["key"]),
            trusted_ca=str(paths["bundle"]),
            server_san=control_plane_spiffe_id(TD),
        )

    def close(self) -> None:
        self._run(self.server.stop(grace=None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not {what or 'true'} within {timeout}s")


def backend_at(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
            return str(response.headers["x-tiermesh-backend"])
    except (OSError, urllib.error.URLError):
        return None


@pytest.fixture
def xds() -> Iterator[SecureXds]:
    server = SecureXds()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def backend() -> Iterator[StandinBackend]:
    with StandinBackend("local-a") as started:
        yield started


def envoy_for(xds: SecureXds, tls: AdsTls, workdir: Path) -> EnvoyProcess:
    spec = BootstrapSpec(
        node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=free_port(), tls=tls
    )
    return EnvoyProcess(render_bootstrap(spec), workdir=workdir, name=NODE)


def test_envoy_with_its_svid_gets_config_over_mtls(
    xds: SecureXds, backend: StandinBackend, tmp_path: Path
) -> None:
    listener = free_port()
    xds._call(
        lambda: xds.cache.set_snapshot(
            NODE, mesh({"local-a": backend.port}, listener_port=listener)
        )
    )
    with envoy_for(xds, xds.write_svid(NODE, tmp_path / "svid"), tmp_path) as envoy:
        envoy.wait_ready(timeout=15)
        eventually(lambda: backend_at(listener) == "local-a", what="routed through Envoy")
        status = xds.status(NODE)
        assert status is not None
        assert status.connected


def test_envoy_with_another_nodes_svid_is_refused(
    xds: SecureXds, backend: StandinBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listener = free_port()
    xds._call(
        lambda: xds.cache.set_snapshot(
            NODE, mesh({"local-a": backend.port}, listener_port=listener)
        )
    )
    with (
        caplog.at_level(logging.WARNING, logger="tiermesh.xds"),
        envoy_for(xds, xds.write_svid("edge-2", tmp_path / "svid"), tmp_path) as envoy,
    ):
        envoy.wait_admin()
        eventually(
            lambda: any(
                "PERMISSION_DENIED" in r.getMessage() and "node id 'edge-1'" in r.getMessage()
                for r in caplog.records
            ),
            what="the authorizer refused edge-2 claiming edge-1",
        )
        assert envoy.admin_status("/ready") != 200
        assert backend_at(listener) is None
        status = xds.status(NODE)
        assert status is None or not status.types
