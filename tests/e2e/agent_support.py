"""Helpers for the node-agent end-to-end tests: a control plane with the demo bundle, node
configs, ``tiermesh agent run`` as a child process, and OpenAI-style requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import psutil
import yaml

from tests.integration.controlplane.test_controlplane_run import TD, Running, tiermesh
from tiermesh.demo.catalog import DemoEndpoint, write_demo_policies
from tiermesh.procs.ports import free_port

TIERMESH = str(Path(sys.executable).with_name("tiermesh"))
READY_S = 60.0
SHIPPED_POLICIES = Path(__file__).resolve().parents[2] / "policies"
"""The shipped bundle: a node's request policy starts from it when the control plane
serves none (tests that push nothing)."""
STOP_S = 20.0


def push_demo(plane: Running, target: Path, endpoints: dict[str, DemoEndpoint]) -> None:
    policies = write_demo_policies(target, endpoints)
    pushed = tiermesh("policy", "push", str(policies), "--etcd", plane.etcd, "--root", plane.root)
    assert pushed.returncode == 0, pushed.stderr


def join_token(plane: Running, node_id: str, folder: Path) -> Path:
    made = tiermesh("token", "create", "--node-id", node_id, "--etcd", plane.etcd,
                    "--root", plane.root)  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = folder / f"{node_id}.token"
    path.write_text(made.stdout)
    return path


@dataclass
class NodePorts:
    app: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    model: int = field(default_factory=free_port)


def node_yaml(
    path: Path,
    plane: Running,
    *,
    node_id: str,
    tier: str,
    ports: NodePorts,
    token: Path | None,
    model: str | None = "tiny",
    residency: tuple[str, ...] = ("eu",),
    envoy: dict[str, Any] | None = None,
) -> Path:
    """Write a node.yaml for ``node_id`` talking to ``plane`` (``envoy``: keys that replace
    or add to the ``envoy`` section). The node runs the request policy (on by default),
    falling back to :data:`SHIPPED_POLICIES` when the control plane serves no bundle."""
    document: dict[str, Any] = {
        "version": "v1",
        "node": {"id": node_id, "tier": tier, "region": "eu-west", "residency": list(residency)},
        "control_plane": {
            "trust_domain": TD,
            "ads": [f"127.0.0.1:{plane.ports['ads']}"],
            "node_api": [f"127.0.0.1:{plane.ports['node']}"],
            "join": [f"127.0.0.1:{plane.ports['join']}"],
            "trust_bundle_file": str(plane.data_dir / "bundle.pem"),
        },
        "identity": {"state_dir": str(path.parent / f"{node_id}-state")},
        "envoy": {
            "admin_address": f"127.0.0.1:{ports.admin}",
            "app_port": ports.app,
            "drain_s": 1,
            **(envoy or {}),
        },
        "model_server": {"kind": "none"},
        "authz": {"policy_dir": str(SHIPPED_POLICIES)},
        "load_interval_s": 0.5,
    }
    if token is not None:
        document["identity"]["join_token_file"] = str(token)
    if model is not None:
        document["model_server"] = {
            "kind": "llama_cpp",
            "model": model,
            "listen": f"127.0.0.1:{ports.model}",
            "n_threads": 1,
        }
    path.write_text(yaml.safe_dump(document))
    return path


def _pump(stream: Any, out: Queue[str]) -> None:
    for line in stream:
        out.put(line)


@dataclass
class AgentProc:
    proc: subprocess.Popen[str]
    lines: Queue[str]
    stderr_path: Path
    pump: threading.Thread
    ready_line: str = ""

    @classmethod
    def start(cls, config: Path) -> AgentProc:
        stderr_path = config.with_suffix(".stderr")
        with stderr_path.open("w") as err:
            proc = subprocess.Popen(
                [TIERMESH, "agent", "run", "--config", str(config)],
                stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip
        lines: Queue[str] = Queue()
        pump = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        pump.start()
        return cls(proc, lines, stderr_path, pump)

    def close(self) -> None:
        """Reap the pipe once the process has exited."""
        self.pump.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def wait_ready(self, timeout: float = READY_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "agent ready" in line:
                self.ready_line = line
                return line
        raise AssertionError(f"agent not ready in {timeout}s:\n{self.stderr()}")

    def wait_exit(self, timeout: float = 90.0) -> tuple[int, list[psutil.Process]]:
        """Wait for the agent to exit by itself; its exit code and every child process seen
        while it ran (polled, so a child that lived only a few milliseconds may be missed)."""
        seen: dict[int, psutil.Process] = {}
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            assert time.monotonic() < deadline, f"agent still running after {timeout}s"
            seen.update((child.pid, child) for child in self.descendants())
            time.sleep(0.02)
        self.close()
        return code, list(seen.values())

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=STOP_S)
        self.close()
        return code

    def kill(self) -> None:
        for child in self.descendants():
            child.kill()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.close()


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.NoSuchProcess:
            continue
    return left


def running_under(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line names a path inside ``folder`` (a node's state
    dir: its Envoy's bootstrap, its model server's model and logs)."""
    prefix = str(folder)
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.pid == os.getpid():
            continue
        try:
            if any(prefix in arg for arg in process.info["cmdline"] or ()) and alive([process]):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def chat(
    port: int,
    headers: dict[str, str],
    *,
    stream: bool = False,
    timeout: float = 30.0,
    extra: dict[str, object] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/chat/completions through the app listener; (status, headers, body).
    ``extra`` adds request fields (``temperature``, ``seed``, ...)."""
    body = {"model": "local", "max_tokens": 8, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}], **(extra or {})}  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError:
        return 0, {}, b""


def eventually_ok(port: int, headers: dict[str, str], limit_s: float = 30.0) -> dict[str, str]:
    deadline = time.monotonic() + limit_s
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        status, got, body = chat(port, headers, timeout=10)
        if status == 200:
            return got
        last = (status, body)
        time.sleep(0.2)
    raise AssertionError(f"no 200 through 127.0.0.1:{port} in {limit_s}s; last {last}")


def chat_text(
    port: int, headers: dict[str, str], content: str, *, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """POST one user message ``content`` through the app listener; (status, headers, body)."""
    body = {"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": content}]}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def audit_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``tiermesh audit <args>``; never raises for a non-zero exit."""
    return subprocess.run(
        [TIERMESH, "audit", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
