"""Node-local services on Unix sockets (private).

Loopback is not a trust boundary: any local process can connect to a TCP port on
127.0.0.1. The agent's services that Envoy calls (ext_authz, the usage access log, the
cascade handler) therefore listen on sockets of mode :data:`SOCKET_MODE` in the node's
state dir (mode 0700): only processes of the node's own Unix user can connect, so the
boundary is that user. Run the agent and its Envoy as the node's service user, and
nothing else as it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import grpc

from tiermesh.agents.identity.errors import SocketPathError
from tiermesh.agents.identity.workload_api import bind_unix_socket_path, release_unix_socket_path

__all__ = ["SOCKET_MODE", "prepare_socket", "release_socket", "start_grpc_on_socket"]

SOCKET_MODE: Final = 0o600
"""Mode of every node-local service socket."""


def prepare_socket(path: Path) -> None:
    """Make ``path`` ready to bind (length checked, a stale socket removed).

    Raises:
        RuntimeError: the path cannot be used (the message names it and why).
    """
    try:
        bind_unix_socket_path(path)
    except SocketPathError as exc:
        raise RuntimeError(str(exc)) from exc


def release_socket(path: Path | None) -> None:
    """Remove the socket file at ``path`` (None: nothing to do)."""
    if path is not None:
        release_unix_socket_path(path)


async def start_grpc_on_socket(
    start: Callable[[str], Awaitable[tuple[grpc.aio.Server, int]]], path: Path
) -> grpc.aio.Server:
    """Start a gRPC server with ``start(address)`` on the Unix socket ``path``, then make
    the socket :data:`SOCKET_MODE`. gRPC creates the socket with the process umask; the
    moment before the chmod is covered by the state dir's 0700.

    Raises:
        RuntimeError: the path cannot be used or bound.
    """
    prepare_socket(path)
    server, _ = await start(f"unix:{path}")
    try:
        os.chmod(path, SOCKET_MODE)
    except OSError:
        await server.stop(0)
        raise
    return server
