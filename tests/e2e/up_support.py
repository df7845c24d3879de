"""Running ``tiermesh up`` as a user would, for the e2e tests that need the whole mesh."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.agent_support import TIERMESH, chat
from tiermesh.procs.ports import free_port

START_BOUND_S = 120.0
ENV = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
# A checkout run from another source tree (PYTHONPATH) must reach the children too.
CHILD_ENV = {**ENV, **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ
                       else {})}  # fmt: skip


@dataclass
class Up:
    proc: subprocess.Popen[str]
    port: int
    state: Path
    lines: list[str]
    took_s: float

    @property
    def mesh(self) -> dict[str, Any]:
        return dict(json.loads((self.state / "mesh.json").read_text()))

    def keyed(self, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with the demo API key (``mesh.json``) of their tenant (``acme`` when
        they name none) as ``authorization: Bearer``: the mesh refuses a request without."""
        keys = self.mesh["api_keys"]
        tenant = headers.get("x-tiermesh-tenant", "acme")
        return {**headers, "authorization": f"Bearer {keys[tenant]['key']}"}

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """Lines printed until one holds ``needle``; fails after ``timeout`` or on exit."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
            continue
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed within {timeout}s; got:\n{''.join(lines)}")


def state_file(state: Path) -> Path:
    """The ``tiermesh up`` state file of the mesh whose state dir is ``state``."""
    return state.with_name(state.name + "-up.json")


@contextlib.contextmanager
def running_up(state: Path, *, graceful: bool = True, args: tuple[str, ...] = ()) -> Iterator[Up]:
    """``tiermesh up`` with its state in ``state``, ready when it prints its prompt.

    On exit it is stopped with Ctrl-C (``graceful``) and killed with everything under it
    if that does not end it within 30 s (or at once when not ``graceful``). ``args`` are
    added to the command line (``--ha``).
    """
    port = free_port()
    started = time.monotonic()
    # Each mesh records itself in its own state file (not the user's, which a person's
    # `tiermesh up` may be using); `state_file(state)` names it.
    env = {**CHILD_ENV, "TIERMESH_STATE_FILE": str(state_file(state))}
    proc = subprocess.Popen(
        [TIERMESH, "up", "--port", str(port), "--state-dir", str(state), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        lines = wait_for_line(proc, "Press Ctrl-C", START_BOUND_S)
        yield Up(proc, port, state, lines, time.monotonic() - started)
    finally:
        if proc.poll() is None:
            if graceful:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30 if graceful else 0)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


CLOUD_WITHIN_S = 30.0


def cloud_answer(
    up: Up, headers: dict[str, str], *, port: int | None = None
) -> tuple[dict[str, str], bytes]:
    """The first 200 from the cloud tier for ``headers``, within a bound (the cloud
    backends' clusters and secrets reach Envoy shortly after ``up`` is ready, and an
    ejected cloud comes back after its ejection time). Only the stand-ins set
    ``x-tiermesh-backend``; their answers name them in the body. ``port``: another node's
    app listener (default: the edge's)."""
    deadline = time.monotonic() + CLOUD_WITHIN_S
    last: tuple[int, dict[str, str], bytes] = (0, {}, b"")
    while time.monotonic() < deadline:
        last = chat(up.port if port is None else port, up.keyed(headers), timeout=10)
        status, got, _ = last
        if status == 200 and got.get("x-tiermesh-tier") == "cloud":
            return got, last[2]
        time.sleep(0.3)
    raise AssertionError(f"no cloud answer in {CLOUD_WITHIN_S}s; last {last}")


def standins(up: Up) -> dict[str, dict[str, Any]]:
    """The cloud stand-ins' state (``GET /standins`` of the mesh's cloud control)."""
    url = f"{up.mesh['cloud_control']}/standins"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return dict(json.load(answer))


def cloud_posts(up: Up) -> dict[str, int]:
    """How many requests with a body each cloud stand-in has received (health checks,
    which are GETs, never count): unchanged means no data reached the cloud."""
    return {name: int(state["posts"]) for name, state in standins(up).items()}


def node_ports(up: Up) -> dict[str, int]:
    """Every node's app listener port, by node id (``nodes.*.app_url`` in mesh.json)."""
    return {
        node: int(urllib.parse.urlsplit(info["app_url"]).port or 0)
        for node, info in up.mesh["nodes"].items()
    }


def steer(up: Up, name: str, /, **changes: Any) -> dict[str, Any]:
    """Change stand-in ``name`` (``up``, ``first_byte_delay_s``, ``failure_status``)."""
    request = urllib.request.Request(
        f"{up.mesh['cloud_control']}/standins/{name}",
        data=json.dumps(changes).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.load(answer))
