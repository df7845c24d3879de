"""``bench/peer_target.py`` as an external benchmark harness drives it: it comes up before
its backends exist, prints where and how to send requests, serves once two fake OpenAI
upstreams (separate processes) start, answers from the fallback when the primary is
killed, and on SIGTERM leaves no process of its tree and no state dir behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.agent_support import alive, chat
from tests.e2e.up_support import CHILD_ENV, wait_for_line
from tiermesh.procs.envoy import admin_request
from tiermesh.procs.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy]

REPO = Path(__file__).resolve().parents[2]
PEER_TARGET = REPO / "bench" / "peer_target.py"
UPSTREAM = REPO / "bench" / "_gw_upstream.py"
READY_S = 120.0
SERVE_S = 30.0
STOP_S = 60.0
AFTER_KILL = 20
"""Requests sent one after another once the primary is killed; each must be answered."""


def _upstream(port: int, name: str) -> subprocess.Popen[bytes]:
    """A fake OpenAI server in its own process (its answers carry
    ``x-bench-upstream: <name>``), accepting connections when this returns."""
    proc = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "--port", str(port), "--name", name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(c.laddr.port == port for c in psutil.Process(proc.pid).net_connections("tcp")):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"upstream {name} not listening on {port}")


def _health(admin: Path, port: int) -> str:
    """Envoy's health flags of the host 127.0.0.1:``port`` (admin ``/clusters`` over the
    node's admin socket); "" when no cluster has that host."""
    status, body = admin_request(str(admin), "/clusters")
    assert status == 200, body
    marker = f"::127.0.0.1:{port}::health_flags::"
    lines = body.decode(errors="replace").splitlines()
    return next((line.split(marker, 1)[1] for line in lines if marker in line), "")


def _answered_by(port: int, headers: dict[str, str]) -> tuple[int, str]:
    status, got, _ = chat(port, headers, timeout=10)
    return status, got.get("x-bench-upstream", "")


@pytest.fixture
def upstreams() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_peer_target_serves_fails_over_and_leaves_nothing(
    upstreams: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    primary_port, fallback_port = free_port(), free_port()
    stderr = (tmp_path / "peer-target.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(PEER_TARGET), "--primary-port", str(primary_port),
         "--fallback-port", str(fallback_port)],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=CHILD_ENV,
    )  # fmt: skip
    tree: list[psutil.Process] = []
    try:
        try:
            lines = wait_for_line(proc, "TARGET_STATE_DIR=", READY_S)
        except AssertionError:
            raise AssertionError((tmp_path / "peer-target.log").read_text()[-3000:]) from None
        printed = dict(line.rstrip("\n").split("=", 1) for line in lines if "=" in line)
        assert printed["TARGET_PID"] == str(proc.pid)
        assert printed["TARGET_MODEL"]
        url = printed["TARGET_URL"]
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        headers = dict(part.split(": ", 1) for part in printed["TARGET_HEADERS"].split(";"))
        assert headers["authorization"].startswith("Bearer tmk_")
        assert {"x-tiermesh-sensitivity", "x-tiermesh-task"} <= set(headers)
        state = Path(printed["TARGET_STATE_DIR"])
        assert state.is_dir()
        tree = psutil.Process(proc.pid).children(recursive=True)
        names = [p.name() for p in tree]
        assert any("envoy" in n for n in names), names
        assert any("etcd" in n for n in names), names

        # The key is what admits a request: without it ext_authz refuses.
        unkeyed = {k: v for k, v in headers.items() if k != "authorization"}
        assert chat(port, unkeyed, timeout=10)[0] == 401

        upstreams.append(_upstream(primary_port, "primary"))
        upstreams.append(_upstream(fallback_port, "fallback"))
        deadline = time.monotonic() + SERVE_S
        last = (0, "")
        while time.monotonic() < deadline and last != (200, "primary"):
            last = _answered_by(port, headers)
            time.sleep(0.2)
        assert last == (200, "primary"), f"not served by the primary in {SERVE_S}s: {last}"
        # The fallback's first health check passes within a second of it listening.
        admin = state / "edge-1" / "envoy-admin.sock"
        while time.monotonic() < deadline and _health(admin, fallback_port) != "healthy":
            time.sleep(0.2)
        assert _health(admin, fallback_port) == "healthy"

        os.kill(upstreams[0].pid, signal.SIGKILL)
        upstreams[0].wait(timeout=10)
        after = [_answered_by(port, headers) for _ in range(AFTER_KILL)]
        assert after == [(200, "fallback")] * AFTER_KILL

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_S) == 0
        assert alive(tree) == []
        assert not state.exists()
    finally:
        # After a failure: the target's own stop first (it removes its state dir), then
        # SIGKILL for whatever is left.
        if proc.poll() is None:
            left = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            tree += left
        for child in alive(tree):
            child.kill()
        assert proc.stdout is not None
        proc.stdout.close()
        stderr.close()
