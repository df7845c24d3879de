"""The SPIFFE Workload API on a unix socket, serving the node's identity to local workloads.

Served with ``grpc.aio`` from py-spiffe's generated servicer (``spiffe._proto``):

- ``FetchX509SVID`` (stream): the current SVID, its PKCS#8 key and the bundle, then again
  after every rotation;
- ``FetchX509Bundles`` (stream): the bundle keyed by trust domain ID, then on every change;
- ``FetchJWTSVID``, ``FetchJWTBundles``, ``ValidateJWTSVID``: UNIMPLEMENTED — tiermesh issues
  X.509-SVIDs only; the status message says so.

Every call must carry the ``workload.spiffe.io: true`` metadata (the spec's guard against
browsers and proxies being tricked into calling the socket); without it the call fails with
INVALID_ARGUMENT naming the header. There is no workload attestation: whoever can open the
socket gets the node's SVID and key, so the socket is created with ``mode`` (owner-only by
default) and should live in a directory only its users can enter.

This module is the edge where errors become gRPC status codes.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from spiffe._proto import workload_pb2, workload_pb2_grpc

from tiermesh.agents.identity.errors import SocketPathError
from tiermesh.agents.identity.material import SvidMaterial
from tiermesh.agents.identity.svid_store import SvidStore

__all__ = [
    "MAX_SOCKET_PATH",
    "WORKLOAD_API_HEADER",
    "WorkloadApiServer",
    "bind_unix_socket_path",
    "release_unix_socket_path",
]

log = logging.getLogger("tiermesh.agents.identity")

WORKLOAD_API_HEADER = ("workload.spiffe.io", "true")
"""The metadata every Workload API call must carry."""

MAX_SOCKET_PATH = 107
"""Longest usable unix socket path in bytes (``sun_path`` is 108 bytes with the NUL)."""

_MISSING_HEADER = "security header missing from request: workload.spiffe.io: true"
_NO_JWT = "JWT-SVIDs are not issued by tiermesh; use FetchX509SVID (X.509-SVIDs) instead"


class _WorkloadApi(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    """Handlers; one instance per server, any number of concurrent calls on its loop."""

    def __init__(self, store: SvidStore) -> None:
        self._store = store

    async def FetchX509SVID(  # noqa: N802 - the generated servicer's method name
        self, request: workload_pb2.X509SVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[workload_pb2.X509SVIDResponse]:
        await _require_header(context)
        async for material in self._store.watch():
            yield _svid_response(material)

    async def FetchX509Bundles(  # noqa: N802
        self,
        request: workload_pb2.X509BundlesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[workload_pb2.X509BundlesResponse]:
        await _require_header(context)
        last: bytes | None = None
        async for material in self._store.watch():
            bundle = material.bundle_der()
            if bundle == last:
                continue  # a rotation that kept the roots changes nothing here
            last = bundle
            yield workload_pb2.X509BundlesResponse(
                bundles={f"spiffe://{material.trust_domain}": bundle}
            )

    async def FetchJWTSVID(  # noqa: N802
        self, request: workload_pb2.JWTSVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> workload_pb2.JWTSVIDResponse:
        await _require_header(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NO_JWT)

    async def FetchJWTBundles(  # noqa: N802
        self,
        request: workload_pb2.JWTBundlesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        # A coroutine (not a generator) is a valid grpc.aio stream handler; it sends nothing.
        await _require_header(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NO_JWT)

    async def ValidateJWTSVID(  # noqa: N802
        self,
        request: workload_pb2.ValidateJWTSVIDRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> workload_pb2.ValidateJWTSVIDResponse:
        await _require_header(context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NO_JWT)


async def _require_header(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    metadata = context.invocation_metadata() or ()
    key, value = WORKLOAD_API_HEADER
    if not any(item[0] == key and item[1] == value for item in metadata):
        log.warning("workload API call without the %s header refused", key)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _MISSING_HEADER)


def _svid_response(material: SvidMaterial) -> workload_pb2.X509SVIDResponse:
    return workload_pb2.X509SVIDResponse(
        svids=[
            workload_pb2.X509SVID(
                spiffe_id=material.spiffe_id,
                x509_svid=material.chain_der(),
                x509_svid_key=material.key_der(),
                bundle=material.bundle_der(),
            )
        ]
    )


def bind_unix_socket_path(path: Path) -> None:
    """Make ``path`` ready to bind: check its length, remove a stale socket left there.

    Raises :class:`SocketPathError` when the path is too long, its directory is missing,
    or something other than a socket is in the way (it is never deleted).
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise SocketPathError(str(path), f"longer than {MAX_SOCKET_PATH} bytes")
    if not path.parent.is_dir():
        raise SocketPathError(str(path), "its directory does not exist")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketPathError(str(path), "a file that is not a socket is in the way")
    path.unlink()


def release_unix_socket_path(path: Path) -> None:
    """Remove the socket file at ``path`` if one is there (nothing else is touched)."""
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        return


class WorkloadApiServer:
    """A Workload API server on the unix socket ``socket_path``.

    Start it with :meth:`start` (or ``async with``) on the loop that owns ``store``; stop it
    with :meth:`stop`, which ends every open stream and removes the socket file. Malformed
    bytes on the socket close only that connection (gRPC's HTTP/2 layer refuses them).
    """

    def __init__(self, store: SvidStore, socket_path: Path | str, *, mode: int = 0o600) -> None:
        self._store = store
        self.socket_path = Path(socket_path)
        self._mode = mode
        self._server: grpc.aio.Server | None = None

    @property
    def endpoint(self) -> str:
        """The address for clients: ``unix:<absolute path>`` (``SPIFFE_ENDPOINT_SOCKET``)."""
        return f"unix:{self.socket_path.absolute()}"

    async def start(self) -> None:
        """Bind and serve. Raises :class:`SocketPathError` or ``RuntimeError`` (bind failed)."""
        if self._server is not None:
            raise RuntimeError("the Workload API server is already running")
        bind_unix_socket_path(self.socket_path)
        server = grpc.aio.server()
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(  # type: ignore[no-untyped-call]
            _WorkloadApi(self._store), server
        )
        server.add_insecure_port(self.endpoint)
        await server.start()
        os.chmod(self.socket_path, self._mode)
        self._server = server
        log.info("workload API serving on %s", self.endpoint)

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving (open streams end after ``grace`` seconds) and remove the socket."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        release_unix_socket_path(self.socket_path)

    async def __aenter__(self) -> WorkloadApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
