"""The agent's reads of Envoy's admin interface, against a real Envoy: HTTP/1.1 (Envoy's
admin answers HTTP/1.0 with 426), chunked answers de-chunked."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from tiermesh.agents.runtime.envoy import EnvoySidecar, http_body
from tiermesh.procs.envoy import EnvoyProcess, admin_request
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, render_bootstrap

pytestmark = pytest.mark.envoy


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_admin_get_reads_what_envoy_serves(tmp_path: Path) -> None:
    spec = BootstrapSpec(
        node_id="edge-1", xds_host="127.0.0.1", xds_port=free_port(), admin_port=free_port()
    )
    with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name="edge-1") as envoy:
        envoy.wait_admin(timeout=20)
        old = _raw(envoy.admin_port, b"GET /server_info HTTP/1.0\r\nHost: x\r\n\r\n")
        assert old.split()[1] == b"426", "why the agent speaks HTTP/1.1"
        sidecar = EnvoySidecar.__new__(EnvoySidecar)
        sidecar.admin = ("127.0.0.1", envoy.admin_port)
        stats = asyncio.run(sidecar.admin_get("/stats?filter=%5Eserver%5C.live%24"))
        assert stats.strip() == "server.live: 1"
        status, expected = admin_request(envoy.admin_port, "/server_info")
        assert status == 200
        # ~100 KB of JSON, sent chunked: it parses only if de-chunked whole
        info = json.loads(asyncio.run(sidecar.admin_get("/server_info")))
        assert info["version"] == json.loads(expected)["version"]
        assert info["node"]["id"] == "edge-1"


def test_a_chunked_answer_is_dechunked_and_a_refusal_is_empty() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    )
    assert http_body(chunked) == b"hello, world"
    assert http_body(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok") == b"ok"
    assert http_body(b"HTTP/1.1 426 Upgrade Required\r\n\r\n") == b""
