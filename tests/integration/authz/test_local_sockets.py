"""Loopback is not a trust boundary: the agent's node-local services (ext_authz, the usage
access log, the cascade handler) listen on Unix sockets of mode 0600 in the node's state
dir (0700), not on TCP ports, so another local user cannot forge decision records, charge
a tenant's budget or call the cascade handler past its route's rate limit.

The boundary is the node's Unix user: a process of that user can still connect (Envoy
must), so run the agent and Envoy as the node's service user and nothing else as it.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from tiermesh.agents.cascade import CascadeHandler
from tiermesh.agents.config import AgentConfig
from tiermesh.agents.identity import SvidStore
from tiermesh.agents.runtime.requests import RequestPolicy
from tiermesh.controlplane.api import RequestPolicyBundle

POLICIES = Path(__file__).resolve().parents[3] / "policies"
_SYSTEM_PYTHON = Path("/usr/bin/python3")


class _NoBundle:
    async def fetch(self) -> RequestPolicyBundle | None:
        return None


def _listening_tcp_inodes() -> set[str]:
    """Inodes of this process's sockets that listen on TCP (IPv4 or IPv6)."""
    mine: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[len("socket:[") : -1])
    listening: set[str] = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A":  # LISTEN
                    listening.add(fields[9])
    return mine & listening


def _config(tmp_path: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "node": {"id": "edge-1", "tier": "local"},
            "control_plane": {
                "trust_domain": "mesh.test",
                "ads": ["127.0.0.1:1"],
                "node_api": ["127.0.0.1:1"],
                "join": ["127.0.0.1:1"],
            },
            "identity": {"state_dir": str(tmp_path / "n")},
            "authz": {"policy_dir": str(POLICIES), "usage_listen": "unix"},
        }
    )


@pytest.fixture
async def requests(tmp_path: Path) -> AsyncIterator[RequestPolicy]:
    config = _config(tmp_path)
    config.state_dir.mkdir(mode=0o700)
    before = _listening_tcp_inodes()
    policy = RequestPolicy(config, SvidStore(), source=_NoBundle())
    await policy.start()
    try:
        assert _listening_tcp_inodes() == before, "a node-local service listens on TCP"
        yield policy
    finally:
        await policy.stop()


def _private_socket(path: Path) -> None:
    mode = path.lstat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert path.parent.stat().st_mode & 0o077 == 0


def _other_user_connects(path: Path) -> str:
    """What a process of user ``nobody`` gets connecting to ``path`` (root only)."""
    if os.geteuid() != 0 or not _SYSTEM_PYTHON.exists():
        pytest.skip("needs root (to run a process as another user) and /usr/bin/python3")
    # Give the other user the way to the socket, so only the socket's own mode decides.
    os.chmod(path.parent, 0o711)
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
        "else:\n"
        "    print('connected')\n"
    )
    try:
        done = subprocess.run(
            [str(_SYSTEM_PYTHON), "-c", probe, str(path)],
            user=65534,
            group=65534,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            cwd="/",
        )
    finally:
        os.chmod(path.parent, 0o700)
    return done.stdout.strip()


async def test_authz_and_usage_listen_on_private_sockets(requests: RequestPolicy) -> None:
    assert requests.port is None
    assert requests.usage_port is None
    assert requests.socket is not None
    assert requests.usage_socket is not None
    assert requests.socket.name == "authz.sock"
    assert requests.usage_socket.name == "usage.sock"
    _private_socket(requests.socket)
    _private_socket(requests.usage_socket)


async def test_a_forged_check_from_another_user_is_refused(requests: RequestPolicy) -> None:
    assert requests.socket is not None
    assert requests.usage_socket is not None
    assert _other_user_connects(requests.socket) == "PermissionError"
    assert _other_user_connects(requests.usage_socket) == "PermissionError"


async def test_envoy_s_own_user_reaches_the_authz_socket(requests: RequestPolicy) -> None:
    """The socket serves: the node's own user (Envoy's) reaches the server, which decides
    (here it cannot sign the record, holding no SVID, and fails the check closed)."""
    async with grpc.aio.insecure_channel(f"unix:{requests.socket}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await external_auth_pb2_grpc.AuthorizationStub(channel).Check(
                external_auth_pb2.CheckRequest(), timeout=10
            )
    assert refused.value.details() == "decision could not be recorded"


async def test_sockets_are_removed_on_stop(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config.state_dir.mkdir(mode=0o700)
    policy = RequestPolicy(config, SvidStore(), source=_NoBundle())
    await policy.start()
    assert policy.socket is not None
    await policy.stop()
    assert not policy.socket.exists()
    assert not config.service_socket("usage", "unix").exists()


async def test_the_cascade_handler_listens_on_a_private_socket(tmp_path: Path) -> None:
    state = tmp_path / "n"
    state.mkdir(mode=0o700)
    path = state / "cascade.sock"
    before = _listening_tcp_inodes()
    handler = CascadeHandler(1, token="t" * 32, socket_path=path)
    await handler.start()
    try:
        assert handler.port == 0
        assert _listening_tcp_inodes() == before
        _private_socket(path)
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(64), 10)).startswith(b"HTTP/1.1 ")
        writer.close()
        await writer.wait_closed()
        assert _other_user_connects(path) == "PermissionError"
    finally:
        await handler.stop()
    assert not path.exists()
