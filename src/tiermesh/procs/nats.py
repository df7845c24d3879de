"""A single nats-server with JetStream as a child process, on loopback, with a throwaway store."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tiermesh.procs.ports import LOOPBACK, free_port

__all__ = ["NatsNotInstalled", "NatsServer", "NatsStartError"]

_LOG_TAIL_BYTES: Final = 4000
_START_ATTEMPTS: Final = 3
_SBIN: Final = "/usr/local/sbin:/usr/sbin:/sbin"


class NatsNotInstalled(RuntimeError):
    """The ``nats-server`` binary is not on PATH."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        super().__init__(
            f"nats-server binary {binary!r} not found on PATH; install it with "
            "`apt-get install nats-server` (or `make os-deps`)"
        )


class NatsStartError(RuntimeError):
    """nats-server exited or did not accept connections in time; carries its log's tail."""

    def __init__(self, reason: str, log_tail: str) -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(
            f"nats-server did not start: {reason}\n--- nats-server log (tail) ---\n{log_tail}"
        )


class NatsServer:
    """One nats-server with JetStream (``-js``) listening only on 127.0.0.1, owned by this
    object.

    `start` (or ``with``) launches it on a free loopback port with its JetStream store in a
    new temp dir and returns once the port accepts connections and the server has logged
    that it is ready. `stop` sends SIGTERM to the child's PID (SIGKILL after
    ``stop_timeout_s``), reaps it and deletes the temp dir. `restart` stops the process
    only (SIGTERM, or SIGKILL with ``kill=True``) and starts it again on the same port with
    the same store, as a queue server restarted in place would be. Not thread-safe; one
    owner.

    Raises `NatsNotInstalled` when the binary is missing and `NatsStartError` when the
    server exits or is not ready within ``ready_timeout_s`` (a lost port race is retried on
    a fresh start, not on a restart).
    """

    def __init__(
        self,
        *,
        binary: str = "nats-server",
        ready_timeout_s: float = 10.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        # Debian installs it in /usr/sbin, which an unprivileged user's PATH often lacks.
        found = shutil.which(binary) or shutil.which(binary, path=_SBIN)
        if found is None:
            raise NatsNotInstalled(binary)
        self.binary = found
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._port = 0
        self._log_start = 0

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``"nats://127.0.0.1:<port>"``, what a nats client connects to. Valid once started."""
        if self._port == 0:
            raise RuntimeError("nats-server is not started")
        return f"nats://{LOOPBACK}:{self._port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("nats-server is not running")
        return self._proc.pid

    @property
    def store_dir(self) -> Path:
        """The JetStream store (kept across `restart`, removed by `stop`)."""
        if self._tmp is None:
            raise RuntimeError("nats-server is not started")
        return self._tmp / "jetstream"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifetime ----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._proc is not None or self._tmp is not None:
            raise RuntimeError("nats-server already started")
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._tmp = Path(tempfile.mkdtemp(prefix="tiermesh-nats-"))
            self._port = free_port()
            try:
                self._launch()
                return
            except NatsStartError:
                self.stop()
                if attempt == _START_ATTEMPTS:
                    raise

    def restart(self, *, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL when ``kill``) and start it again on the same
        port and store. Raises `NatsStartError` when it does not come back."""
        if self._tmp is None:
            raise RuntimeError("nats-server is not started")
        self._terminate(signal.SIGKILL if kill else signal.SIGTERM)
        self._launch()

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--addr",
            LOOPBACK,
            "--port",
            str(self._port),
            "-js",
            "--store_dir",
            str(self.store_dir),
            "--server_name",
            "tiermesh",
        ]

    def _launch(self) -> None:
        assert self._tmp is not None
        with (self._tmp / "nats.log").open("ab") as log:
            self._log_start = log.tell()
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._tmp,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise NatsStartError(f"exited with code {self._proc.returncode}", self.log_tail())
            if self._accepting():
                return
            time.sleep(0.02)
        raise NatsStartError(f"not ready after {self.ready_timeout_s} s", self.log_tail())

    def _accepting(self) -> bool:
        """True once the client port answers with the server's INFO line and the log says
        the server is ready (JetStream recovered its store before the port is opened)."""
        try:
            with socket.create_connection((LOOPBACK, self._port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                greeting = sock.recv(16)
        except OSError:
            return False
        return greeting.startswith(b"INFO ") and b"Server is ready" in self._log_since_launch()

    def _log_since_launch(self) -> bytes:
        assert self._tmp is not None
        try:
            with (self._tmp / "nats.log").open("rb") as log:
                log.seek(self._log_start)
                return log.read()
        except OSError:
            return b""

    def log_tail(self) -> str:
        """The last few KB of the server's log, for error messages ("" once stopped)."""
        if self._tmp is None:
            return ""
        try:
            with (self._tmp / "nats.log").open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _terminate(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        else:
            proc.wait()

    def stop(self) -> None:
        """Stop the child by PID (SIGTERM, then SIGKILL) and delete its store. Idempotent."""
        self._terminate(signal.SIGTERM)
        tmp, self._tmp = self._tmp, None
        self._port = 0
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
