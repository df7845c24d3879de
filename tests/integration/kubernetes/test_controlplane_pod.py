"""The control-plane pod of ``deploy/kubernetes/controlplane.yaml`` run as processes: its
init container's command, then ``tiermesh controlplane run`` with the manifest's own args,
each path moved under a temporary directory that stands for its volume and each port made
free on loopback, over a real etcd; then the manifest's own probe command.

It shows what the schema and CLI checks cannot: that the Secret files, group-readable as
Kubernetes mounts them under an fsGroup, are refused by the control plane, and that the
init container's copy is accepted and serves a healthy replica.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from queue import Empty, Queue
from typing import Any

import pytest

from tests.unit.kubernetes.checks import controlplane_container
from tests.unit.kubernetes.manifests import Container, containers, load_manifests
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port

pytestmark = [pytest.mark.etcd]
TIERMESH = str(Path(sys.executable).with_name("tiermesh"))
READY_S = 60.0
_ADDRESS = re.compile(r"^(0\.0\.0\.0|127\.0\.0\.1):(\d+)$")


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture(scope="module")
def pod() -> tuple[Container, Container]:
    """The control plane's init container (`secrets`) and its main container."""
    docs = load_manifests()
    main = controlplane_container(docs)
    (init,) = [c for c in containers(docs) if c.init and c.workload is main.workload]
    return init, main


class Pod:
    """Volumes of one simulated pod: each mount path maps to a folder under ``root``."""

    def __init__(self, root: Path, *members: Container) -> None:
        self.folders: dict[PurePosixPath, Path] = {}
        for container in members:
            for mount, volume in container.mounts().items():
                folder = root / volume["name"]
                folder.mkdir(exist_ok=True)
                self.folders[mount] = folder

    def path(self, text: str) -> str:
        """``text`` moved to its volume's folder when it is a path under a mount."""
        for mount, folder in sorted(self.folders.items(), key=lambda i: -len(i[0].parts)):
            if PurePosixPath(text).is_relative_to(mount):
                return str(folder / PurePosixPath(text).relative_to(mount))
        return text


def _localise(args: list[str], pod: Pod, ports: dict[int, int], etcd: str) -> list[str]:
    out = []
    for arg in args:
        match = _ADDRESS.match(arg)
        if match:
            port = int(match.group(2))
            ports.setdefault(port, free_port())
            out.append(f"127.0.0.1:{ports[port]}")
        elif out and out[-1] == "--etcd":
            out.append(etcd)
        else:
            out.append(pod.path(arg))
    return out


def _write_secret(pod: Pod, key: str, text: str) -> Path:
    """A Secret key as the kubelet writes it with defaultMode 0440 under an fsGroup."""
    file = Path(pod.path(f"/etc/tiermesh-secrets/{key}"))
    file.write_text(text)
    file.chmod(0o440)
    return file


def _lines(stream: Any, out: Queue[str]) -> None:
    for line in stream:
        out.put(line)


def _run_plane(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``tiermesh ARGV``; its first stdout line, or ("", stderr) once it exits."""
    proc = subprocess.Popen(
        [TIERMESH, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: Queue[str] = Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        try:
            return proc, lines.get(timeout=0.2)
        except Empty:
            if proc.poll() is not None and lines.empty():
                break
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate(timeout=10)
    return proc, err


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.communicate(timeout=10)


def _probe(main: Container, kind: str, admin_port: int) -> int:
    command = list(main.spec[kind]["exec"]["command"])
    assert command[:2] == ["python", "-c"]
    command[0] = sys.executable
    command[2] = command[2].replace(":18003/", f":{admin_port}/")
    return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode


def test_the_secret_as_mounted_is_refused_and_the_init_containers_copy_serves(
    tmp_path: Path, etcd: EtcdServer, pod: tuple[Container, Container]
) -> None:
    init, main = pod
    volumes = Pod(tmp_path, init, main)
    _write_secret(volumes, "ca-passphrase", "correct horse battery staple\n")
    _write_secret(volumes, "cloud-credentials.yaml", 'openai-key: "sk-test"\n')
    ports: dict[int, int] = {}
    root = ["--root", f"/test-{uuid.uuid4().hex}/tiermesh/v1/"]
    args = _localise(main.args(), volumes, ports, etcd.endpoint) + root

    # Straight from the Secret volume: group-readable, refused before anything starts.
    direct = list(args)
    for option, key in (
        ("--ca-passphrase-file", "ca-passphrase"),
        ("--credentials-file", "cloud-credentials.yaml"),
    ):
        direct[direct.index(option) + 1] = volumes.path(f"/etc/tiermesh-secrets/{key}")
    proc, err = _run_plane(direct)
    assert proc.returncode not in (None, 0), err
    assert "accessible by group or others" in err, err

    # The init container's own command copies them owner-only onto the memory volume.
    command = [volumes.path(str(a)) for a in init.spec["command"]]
    copied = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert copied.returncode == 0, copied.stderr
    for option in ("--ca-passphrase-file", "--credentials-file"):
        written = Path(args[args.index(option) + 1])
        assert written.stat().st_mode & 0o777 == 0o400, option
        assert written.stat().st_uid == os.getuid(), option

    proc, line = _run_plane(args)
    try:
        assert line.startswith("control plane ready"), line
        admin = ports[18003]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert _probe(main, kind, admin) == 0, kind
        assert (volumes.folders[PurePosixPath("/var/lib/tiermesh")] / "bundle.pem").is_file()
    finally:
        _stop(proc)
    # The probe fails once the replica is gone: it really asks the server.
    assert _probe(main, "livenessProbe", admin) != 0
