"""The ready listener against a real Envoy whose admin interface is on a private socket:
``GET /ready`` is the only thing it answers, and it follows Envoy's health state."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tiermesh.procs.envoy import EnvoyProcess, admin_request
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, render_bootstrap

pytestmark = pytest.mark.envoy


def _get(port: int, path: str, *, method: str = "GET") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _until(check: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not {what} after {limit_s} s")


def test_ready_answers_only_readiness_and_follows_the_health_state(tmp_path: Path) -> None:
    ready_port = free_port()
    admin = tmp_path / "admin.sock"
    spec = BootstrapSpec(
        node_id="edge-1",
        xds_host="127.0.0.1",
        xds_port=free_port(),  # nothing serves ADS: initialisation ends at the fetch timeout
        admin_socket=str(admin),
        initial_fetch_timeout_s=0.5,
        ready_address=("127.0.0.1", ready_port),
    )
    with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name="edge-1") as envoy:
        envoy.wait_ready(timeout=20)
        _until(lambda: _get(ready_port, "/ready")[0] == 200, "ready")
        # Nothing of the admin interface is reachable through it.
        for path in ("/config_dump", "/quitquitquit", "/server_info", "/ready/x", "/"):
            assert _get(ready_port, path)[0] == 404, path
        assert _get(ready_port, "/quitquitquit", method="POST")[0] == 404
        assert admin.stat().st_mode & 0o777 == 0o600
        # Failing health checks (what draining does) turns readiness off.
        assert admin_request(str(admin), "/healthcheck/fail", method="POST")[0] == 200
        _until(lambda: _get(ready_port, "/ready")[0] == 503, "unready after /healthcheck/fail")
        assert admin_request(str(admin), "/healthcheck/ok", method="POST")[0] == 200
        _until(lambda: _get(ready_port, "/ready")[0] == 200, "ready again")
        assert envoy.process is not None
        assert envoy.process.poll() is None
