"""``tiermesh up`` as a user runs it: starts, serves a request, stops on Ctrl-C, leaves nothing."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tiermesh.procs.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
TIERMESH = [str(Path(sys.executable).with_name("tiermesh"))]
START_TIMEOUT_S = 60


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed within {timeout}s; got:\n{''.join(lines)}")


def test_up_serves_and_stops_cleanly() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*TIERMESH, "up", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    try:
        lines = _wait_for_line(proc, "Press Ctrl-C", START_TIMEOUT_S)
        assert any(f"http://127.0.0.1:{port}" in line for line in lines)
        assert any("curl -s" in line for line in lines)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("envoy" in c.name() for c in children)

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps({"model": "local", "messages": []}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.loads(response.read())
            assert response.headers["x-tiermesh-tier"] == "local"
            assert response.headers["server"] == "envoy"
        assert body["choices"][0]["message"]["content"] == "answered by edge-local"

        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 15
        assert not [c for c in children if c.is_running() and c.status() != "zombie"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_up_names_a_port_in_use_and_leaves_nothing_running() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*TIERMESH, "up", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
            check=False,
        )
    assert result.returncode == 1
    assert f"app listener port {port} on 127.0.0.1 is in use" in result.stdout
    assert "stopped; nothing left running." in result.stdout
