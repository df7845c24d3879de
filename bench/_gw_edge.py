"""The shipped edge path of ``gateway_overhead.py``: ``bench/peer_target.py`` in a child
process, driven exactly as an external peer harness drives it.

The child runs one edge node as ``tiermesh up`` does (control plane, etcd, agent with
ext_authz, durable signed audit and usage accounting, Envoy; see
:mod:`tiermesh.demo.edge_target`) in front of upstreams A (primary) and B (fallback), and
prints ``TARGET_*`` lines once it is ready; :class:`EdgePath` reads them, waits until a
request is answered by A and B is healthy in Envoy, and on ``close`` sends SIGTERM to the
child (which stops its tree and removes its state dir), SIGKILLing what is left after
:data:`STOP_S`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import psutil

from _gw_owned import Owned, log_tail
from tiermesh.procs.envoy import admin_request

PEER_TARGET = Path(__file__).with_name("peer_target.py")
READY_S = 120.0
SERVE_S = 30.0
STOP_S = 60.0


def component(process: psutil.Process, root: int) -> str:
    """What a process of the edge node's tree is, for the CPU split."""
    if process.pid == root:
        return "harness process (cloud stand-ins)"
    try:
        command = " ".join(process.cmdline())
        name = process.name()
    except psutil.Error:
        return "gone"
    if "envoy" in name:
        return "envoy"
    if "etcd" in name:
        return "etcd"
    if " agent run" in command:
        return "agent (ext_authz, audit, usage)"
    if " controlplane run" in command:
        return "control plane (audit collector)"
    return str(name)


def _pump(stream: Iterable[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


class EdgePath(Owned):
    """See the module docstring. ``port``, ``headers``, ``model``, ``state_dir`` and
    ``pid`` are what the child printed. Not thread-safe."""

    def __init__(
        self,
        primary_port: int,
        fallback_port: int,
        *,
        peer_target: Path = PEER_TARGET,
        env: dict[str, str] | None = None,
    ) -> None:
        """``peer_target`` and ``env`` (the child's environment; default: this one's)
        start the node of another source tree (``edge_trees.py``)."""
        self.peer_target = peer_target
        self.env = env
        self.primary_port = primary_port
        self.fallback_port = fallback_port
        self._dir = Path(tempfile.mkdtemp(prefix="tiermesh-gw-edge-"))
        self.log_path = self._dir / "peer-target.log"
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.pid = 0
        self.headers: dict[str, str] = {}
        self.model = ""
        self.state_dir = Path()

    @property
    def admin(self) -> str:
        """The node's Envoy admin socket."""
        return str(self.state_dir / "edge-1" / "envoy-admin.sock")

    def start(self) -> float:
        """Start the child and wait until it serves; returns the seconds that took."""
        started = time.monotonic()
        command = [sys.executable, str(self.peer_target), "--primary-port", str(self.primary_port)]
        command += ["--fallback-port", str(self.fallback_port)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
                env=self.env,
            )
        printed = self._read_ready()
        self.port = int(printed["TARGET_URL"].rsplit(":", 1)[1])
        self.pid = int(printed["TARGET_PID"])
        self.headers = dict(part.split(": ", 1) for part in printed["TARGET_HEADERS"].split(";"))
        self.model = printed["TARGET_MODEL"]
        self.state_dir = Path(printed["TARGET_STATE_DIR"])
        self._wait_serving()
        return time.monotonic() - started

    def _read_ready(self) -> dict[str, str]:
        assert self.process is not None
        assert self.process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.process.stdout
        threading.Thread(target=_pump, args=(stdout, lines), daemon=True).start()
        printed: dict[str, str] = {}
        deadline = time.monotonic() + READY_S
        while "TARGET_STATE_DIR" not in printed:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"peer target not ready:\n{self.tail()}")
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            key, _, value = line.rstrip("\n").partition("=")
            printed[key] = value
        return printed

    def _wait_serving(self) -> None:
        """Until a request is answered by upstream A and Envoy holds B healthy."""
        deadline = time.monotonic() + SERVE_S
        last = ""
        while time.monotonic() < deadline:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/v1/chat/completions",
                data=b'{"model":"%s","messages":[{"role":"user","content":"hi"}]}'
                % self.model.encode(),
                headers={"content-type": "application/json", **self.headers},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    last = f"{response.status} from {response.headers.get('x-bench-upstream')}"
                    if response.headers.get("x-bench-upstream") == "a" and self.healthy():
                        return
            except (OSError, urllib.error.HTTPError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"edge path not served by A with B healthy in {SERVE_S}s: {last}")

    def clusters(self) -> str:
        status, body = admin_request(self.admin, "/clusters")
        if status != 200:
            raise RuntimeError(f"envoy admin /clusters answered {status}")
        return body.decode(errors="replace")

    def healthy(self) -> bool:
        """Whether Envoy holds the fallback's host healthy."""
        marker = f"::127.0.0.1:{self.fallback_port}::health_flags::healthy"
        return any(line.endswith(marker) for line in self.clusters().splitlines())

    def tree(self) -> dict[int, str]:
        """PID → :func:`component` of every process of the node's tree."""
        root = psutil.Process(self.pid)
        return {p.pid: component(p, self.pid) for p in [root, *root.children(recursive=True)]}

    def tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    def close(self) -> None:
        process, self.process = self.process, None
        try:
            if process is not None and process.poll() is None:
                left = psutil.Process(process.pid).children(recursive=True)
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_S)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(10)
                for child in left:
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            if process is not None and process.stdout is not None:
                process.stdout.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
