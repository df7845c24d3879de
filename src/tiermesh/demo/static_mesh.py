"""The mesh ``tiermesh up`` runs until node agents exist: a control plane serving a static
snapshot, one edge Envoy, and a local stand-in backend behind it.

Everything binds 127.0.0.1. :class:`StaticMesh` owns every process and thread it starts
and stops all of them, in reverse order, whatever failed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc

from tiermesh.demo.standin import StandinBackend
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import LOOPBACK, free_port
from tiermesh.xds import AdsServer, BootstrapSpec, Snapshot, SnapshotCache, render_bootstrap
from tiermesh.xds import start_server as start_ads
from tiermesh.xds.builders import eds_cluster, http_listener, load_assignment, route_config

__all__ = ["EDGE_NODE", "MeshError", "StaticMesh", "static_snapshot"]

EDGE_NODE = "edge-1"
LOCAL_CLUSTER = "local"


class MeshError(RuntimeError):
    """The mesh could not start; the message names the cause."""


def static_snapshot(*, app_port: int, backend_port: int) -> Snapshot:
    """The edge node's config: every request on the app port goes to the local backend."""
    return Snapshot.build(
        clusters=[eds_cluster(LOCAL_CLUSTER)],
        endpoints=[load_assignment(LOCAL_CLUSTER, [(LOOPBACK, backend_port)])],
        listeners=[http_listener("app", address=LOOPBACK, port=app_port, route_config_name="app")],
        routes=[
            route_config(
                "app", [("/", LOCAL_CLUSTER)], response_headers=[("x-tiermesh-tier", "local")]
            )
        ],
    )


def ensure_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise MeshError(f"{what} port {port} on {LOOPBACK} is in use ({exc.strerror})") from exc


@dataclass
class StaticMesh:
    """A one-node mesh on loopback; ``start`` then ``stop`` (``stop`` is always safe)."""

    app_port: int = 10000
    xds_port: int = 0
    mode: str = "sotw"

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="tiermesh-up-"))
        self.backend: StandinBackend | None = None
        self.server: grpc.aio.Server | None = None
        self.envoy: EnvoyProcess | None = None
        self.cache = SnapshotCache()
        self.ads = AdsServer(self.cache)

    @property
    def app_url(self) -> str:
        return f"http://{LOOPBACK}:{self.app_port}"

    async def start_backend(self) -> None:
        self.backend = StandinBackend("edge-local").start()

    async def start_control_plane(self) -> None:
        ensure_free(self.app_port, "app listener")
        if self.xds_port:
            ensure_free(self.xds_port, "xDS")
        assert self.backend is not None
        self.server, self.xds_port = await start_ads(self.ads, f"{LOOPBACK}:{self.xds_port}")
        snapshot = static_snapshot(app_port=self.app_port, backend_port=self.backend.port)
        self.cache.set_snapshot(EDGE_NODE, snapshot)

    async def start_envoy(self, ready_timeout: float = 30.0) -> None:
        spec = BootstrapSpec(
            node_id=EDGE_NODE,
            xds_host=LOOPBACK,
            xds_port=self.xds_port,
            admin_port=free_port(),
            mode=self.mode,  # type: ignore[arg-type]
        )
        self.envoy = EnvoyProcess(render_bootstrap(spec), workdir=self.workdir, name=EDGE_NODE)
        self.envoy.start()
        try:
            await asyncio.to_thread(self.envoy.wait_ready, ready_timeout)
        except Exception as exc:
            raise MeshError(f"Envoy failed to start: {exc}") from exc

    async def stop(self) -> None:
        if self.envoy is not None:
            await asyncio.to_thread(self.envoy.stop)
            self.envoy = None
        if self.server is not None:
            await self.server.stop(grace=1)
            self.server = None
        if self.backend is not None:
            self.backend.stop()
            self.backend = None
        shutil.rmtree(self.workdir, ignore_errors=True)
