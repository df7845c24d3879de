"""The nats-server child: loopback only, restart in place keeps port and store, stop by
PID removes the store."""

from __future__ import annotations

import os
import shutil

import psutil
import pytest

from tiermesh.procs.nats import NatsNotInstalled, NatsServer

pytestmark = pytest.mark.skipif(
    shutil.which("nats-server") is None and not os.path.exists("/usr/sbin/nats-server"),
    reason="nats-server is not installed",
)


def test_start_restart_stop() -> None:
    server = NatsServer()
    server.start()
    try:
        url, store, pid = server.url, server.store_dir, server.pid
        assert url.startswith("nats://127.0.0.1:")
        listening = {c.laddr.ip for c in psutil.Process(pid).net_connections() if c.laddr}
        assert listening == {"127.0.0.1"}
        server.restart(kill=True)
        assert (server.url, server.store_dir) == (url, store)
        assert server.pid != pid
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert store.is_dir()
        pid = server.pid
    finally:
        server.stop()
    assert not server.running
    assert not psutil.pid_exists(pid)
    assert not store.exists()
    server.stop()  # idempotent


def test_a_missing_binary_is_named() -> None:
    with pytest.raises(NatsNotInstalled, match="no-such-nats-server"):
        NatsServer(binary="no-such-nats-server")
