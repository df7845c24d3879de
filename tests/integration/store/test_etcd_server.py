"""EtcdServer: a real etcd child process on loopback, stopped by PID, data removed."""

from __future__ import annotations

import http.client
import os
import socket

import pytest

from tiermesh.controlplane.store import EtcdStore, StoreUnavailable
from tiermesh.procs.etcd import EtcdServer

pytestmark = pytest.mark.etcd


def test_server_runs_on_loopback_and_stop_removes_process_and_data() -> None:
    with EtcdServer.for_tests() as server:
        host, port = server.endpoint.split(":")
        pid, data_dir = server.pid, server.data_dir
        assert host == "127.0.0.1"
        os.kill(pid, 0)  # alive
        assert data_dir.is_dir()
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
        conn.request("GET", "/version")
        assert b"3." in conn.getresponse().read()
        conn.close()
        with socket.create_connection((host, int(port)), timeout=2):
            pass

    assert not server.running
    assert not data_dir.exists()
    assert not data_dir.parent.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    server.stop()  # idempotent


async def test_unreachable_endpoint_raises_store_unavailable() -> None:
    server = EtcdServer.for_tests()
    server.start()
    endpoint = server.endpoint
    server.stop()

    store = EtcdStore(endpoint, timeout_s=2.0)
    with pytest.raises(StoreUnavailable) as caught:
        await store.connect()
    await store.aclose()
    assert caught.value.endpoint == endpoint
    assert "Connection refused" in caught.value.detail or "connect" in caught.value.detail
