"""``tiermesh controlplane run --metrics``: Prometheus ``/metrics`` alone, on its own port,
with the control plane's figures (a real etcd); a taken port is named."""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.controlplane.test_controlplane_run import TD, start_plane, tiermesh
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


def test_the_metrics_port_serves_the_control_planes_figures(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    port = free_port()
    running = start_plane(tmp_path, etcd.endpoint, "--metrics", f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 15
        text = ""
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
            if 'tiermesh_reconcile_duration_seconds_count{outcome="ok"}' in text:
                break
            time.sleep(0.2)
        assert 'tiermesh_reconcile_duration_seconds_count{outcome="ok"}' in text
        assert "# TYPE tiermesh_xds_push_ack_seconds histogram" in text
        assert "tiermesh_xds_connected_nodes 0.0" in text
        assert '"trust_domain"' not in text  # the status document stays on --admin
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
        running.proc.communicate(timeout=10)


def test_a_metrics_port_in_use_is_named(tmp_path: Path, etcd: EtcdServer) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = tiermesh(
            "controlplane", "run", "--etcd", etcd.endpoint, "--trust-domain", TD,
            "--data-dir", str(tmp_path / "d"), "--ca-passphrase-file", str(secret),
            "--root", f"/test-{uuid.uuid4().hex}/tiermesh/v1/",
            "--listen", "127.0.0.1:0", "--node-api", "127.0.0.1:0", "--join", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", "--metrics", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "--metrics" in result.stderr
