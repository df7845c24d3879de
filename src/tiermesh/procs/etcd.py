"""A single-member etcd server as a child process, on loopback, with a throwaway data dir."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tiermesh.procs.ports import LOOPBACK, free_port

__all__ = ["EtcdNotInstalled", "EtcdServer", "EtcdStartError"]

_LOG_TAIL_BYTES: Final = 4000
_START_ATTEMPTS: Final = 3


class EtcdNotInstalled(RuntimeError):
    """The ``etcd`` binary is not on PATH."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        super().__init__(
            f"etcd binary {binary!r} not found on PATH; install it with "
            "`apt-get install etcd-server` (or `make os-deps`)"
        )


class EtcdStartError(RuntimeError):
    """etcd exited or did not become healthy in time; carries the tail of its log."""

    def __init__(self, reason: str, log_tail: str) -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"etcd did not start: {reason}\n--- etcd log (tail) ---\n{log_tail}")


class EtcdServer:
    """One etcd member listening only on 127.0.0.1, owned by this object.

    `start` (or ``with``) launches ``etcd`` on free loopback client and peer ports with a data
    dir in a new temp dir and returns once ``/health`` answers; `stop` sends SIGTERM to the
    child's PID, SIGKILL after ``stop_timeout_s``, reaps it and deletes the temp dir. Not
    thread-safe; one owner. Test settings: ``EtcdServer.for_tests()``.

    Raises `EtcdNotInstalled` when the binary is missing and `EtcdStartError` when etcd
    exits or is not healthy within ``ready_timeout_s`` (a lost port race is retried).
    """

    def __init__(
        self,
        *,
        binary: str = "etcd",
        name: str = "tiermesh",
        unsafe_no_fsync: bool = False,
        heartbeat_interval_ms: int = 100,
        election_timeout_ms: int = 1000,
        max_request_bytes: int | None = None,
        max_txn_ops: int | None = None,
        ready_timeout_s: float = 10.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise EtcdNotInstalled(binary)
        self.binary = found
        self.name = name
        self.unsafe_no_fsync = unsafe_no_fsync
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.election_timeout_ms = election_timeout_ms
        self.max_request_bytes = max_request_bytes
        self.max_txn_ops = max_txn_ops
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._client_port = 0
        self._peer_port = 0

    @classmethod
    def for_tests(cls) -> EtcdServer:
        """Fast election (ready in ~0.1 s) and no fsync: for tests and benchmarks only."""
        return cls(unsafe_no_fsync=True, heartbeat_interval_ms=10, election_timeout_ms=50)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:<client port>"``, what `EtcdStore` takes. Valid while running."""
        self._require_running()
        return f"{LOOPBACK}:{self._client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def pid(self) -> int:
        self._require_running()
        assert self._proc is not None
        return self._proc.pid

    @property
    def data_dir(self) -> Path:
        self._require_running()
        assert self._tmp is not None
        return self._tmp / "data"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _require_running(self) -> None:
        if self._proc is None:
            raise RuntimeError("etcd server is not started")

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
        if self._proc is not None:
            raise RuntimeError("etcd server already started")
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except EtcdStartError:
                self.stop()
                if attempt == _START_ATTEMPTS:
                    raise

    def _command(self, data_dir: Path) -> list[str]:
        client = f"http://{LOOPBACK}:{self._client_port}"
        peer = f"http://{LOOPBACK}:{self._peer_port}"
        cmd = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--initial-cluster-state=new",
            f"--heartbeat-interval={self.heartbeat_interval_ms}",
            f"--election-timeout={self.election_timeout_ms}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if self.unsafe_no_fsync:
            cmd.append("--unsafe-no-fsync")
        if self.max_request_bytes is not None:
            cmd.append(f"--max-request-bytes={self.max_request_bytes}")
        if self.max_txn_ops is not None:
            cmd.append(f"--max-txn-ops={self.max_txn_ops}")
        return cmd

    def _start_once(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="tiermesh-etcd-"))
        self._client_port = free_port()
        self._peer_port = free_port()
        while self._peer_port == self._client_port:
            self._peer_port = free_port()
        data_dir = self._tmp / "data"
        with (self._tmp / "etcd.log").open("wb") as log:
            self._proc = subprocess.Popen(
                self._command(data_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._tmp,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EtcdStartError(f"exited with code {self._proc.returncode}", self.log_tail())
            if self._healthy():
                return
            time.sleep(0.02)
        raise EtcdStartError(f"not healthy after {self.ready_timeout_s} s", self.log_tail())

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection(LOOPBACK, self._client_port, timeout=1.0)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            body = response.read()
        except OSError:
            return False
        finally:
            conn.close()
        return response.status == 200 and b'"health":"true"' in body

    def log_tail(self) -> str:
        """The last few KB of etcd's log, for error messages ("" once stopped)."""
        if self._tmp is None:
            return ""
        try:
            with (self._tmp / "etcd.log").open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the child by PID (SIGTERM, then SIGKILL) and delete its data. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            else:
                proc.wait()
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
