"""A llama.cpp model server (``llama-cpp-python[server]``) run under a `Supervisor`.

The server speaks the OpenAI API (``/v1/models``, ``/v1/chat/completions``, streaming,
logprobs). It has no health endpoint, so readiness and health are ``GET /v1/models``. It
serves one request at a time; ``--interrupt_requests False`` is always passed, because the
default silently truncates a stream when a second request arrives. Run through
`tiermesh.agents.models.serve` (the default), it also answers ``GET /tiermesh/load``
(`read_load`) and sends the usage chunk of a stream that asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from tiermesh.agents.models.errors import (
    ModelFileNotFoundError,
    ModelLoadError,
    PortInUseError,
    ServerExitedError,
    ServerNotReadyError,
)
from tiermesh.agents.models.load import LOAD_PATH, LoadReport
from tiermesh.agents.supervisor import (
    ChildExitedError,
    HealthTimeoutError,
    ProcessSpec,
    RestartPolicy,
    Supervisor,
    SupervisorStatus,
    http_health_check,
)
from tiermesh.procs.ports import LOOPBACK, free_port

__all__ = ["LlamaServer"]

_PORT_ATTEMPTS: Final = 3
_LOAD_ERROR: Final = re.compile(
    r"(error loading model: .*|invalid magic characters.*|Model path does not exist.*"
    r"|Failed to load model from file.*)"
)
_ADDRESS_IN_USE: Final = re.compile(r"address already in use|Errno 98", re.IGNORECASE)
_MAX_LOAD_REPLY: Final = 64 * 1024


class LlamaServer:
    """One ``python -m llama_cpp.server`` child on ``host:port``, with one model.

    `start` returns once ``GET /v1/models`` answers 200; after that the supervisor restarts
    the server with backoff if it crashes or stops answering. `stop` leaves no process
    behind and removes the temp dir it made for the log (a given ``workdir`` is kept).

    By default the server runs through `tiermesh.agents.models.serve`, which loads the model
    without extra buffer types (AMX/repack crash quantized models on some CPUs; see
    `tiermesh.agents.models.buffers`); ``extra_buffers=True`` runs ``llama_cpp.server`` as is.

    ``port=0`` picks a free loopback port (a lost race for it is retried). Errors name their
    cause: `ModelFileNotFoundError` (before any process), `ModelLoadError` (the server's
    reason and log tail), `PortInUseError`, `ServerExitedError`, `ServerNotReadyError`.
    Not thread-safe; call it from one event loop.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        n_threads: int = 1,
        n_ctx: int = 2048,
        alias: str | None = None,
        workdir: Path | None = None,
        ready_timeout_s: float = 60.0,
        policy: RestartPolicy | None = None,
        extra_args: Sequence[str] = (),
        extra_buffers: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        self.host = host
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.alias = alias or self.model_path.stem
        self.ready_timeout_s = ready_timeout_s
        self.policy = policy or RestartPolicy(start_timeout_s=ready_timeout_s)
        self.extra_args = tuple(extra_args)
        self.extra_buffers = extra_buffers
        self._requested_port = port
        self._port = port
        self._workdir = workdir
        self._tmp: Path | None = None
        self._supervisor: Supervisor | None = None

    # -- queries -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` (append ``/v1/...``)."""
        return f"http://{self.host}:{self._port}"

    @property
    def status(self) -> SupervisorStatus | None:
        return self._supervisor.status if self._supervisor is not None else None

    @property
    def pid(self) -> int | None:
        return self._supervisor.pid if self._supervisor is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._supervisor.spec.log_path if self._supervisor is not None else None

    def log_tail(self, lines: int = 40) -> str:
        return self._supervisor.log_tail(lines) if self._supervisor is not None else ""

    async def read_load(self, timeout_s: float = 1.0) -> LoadReport | None:
        """The server's live load (``GET /tiermesh/load``), or None when it does not answer
        in time (``timeout_s``): not running, busy past the timeout, started with
        ``extra_buffers=True`` (plain ``llama_cpp.server`` has no load endpoint). Never
        raises (cancellation aside). Safe to call concurrently with anything."""
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self._port)
                try:
                    request = f"GET {LOAD_PATH} HTTP/1.0\r\nHost: {self.host}\r\n\r\n"
                    writer.write(request.encode())
                    await writer.drain()
                    reply = b""
                    while len(reply) < _MAX_LOAD_REPLY and (part := await reader.read(4096)):
                        reply += part
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError):
            return None
        head, _, body = reply.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or status[1] != b"200":
            return None
        try:
            return LoadReport.from_json(body)
        except ValueError:
            return None

    # -- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server and wait until it answers; see the class docstring for errors."""
        if not self.model_path.is_file():
            raise ModelFileNotFoundError(self.model_path)
        if self._requested_port:
            _require_free(self.host, self._requested_port)
        workdir = self._workdir
        if workdir is None:
            self._tmp = workdir = Path(tempfile.mkdtemp(prefix="tiermesh-llama-"))
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or free_port(self.host)
            try:
                await self._start_once(workdir)
            except PortInUseError:
                await self._stop_supervisor()
                if attempt == attempts:
                    await self.stop()
                    raise
            except BaseException:
                await self.stop()
                raise
            else:
                return

    async def stop(self) -> None:
        """Stop the server (its whole process group) and clean up. Idempotent."""
        await self._stop_supervisor()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def _stop_supervisor(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            await supervisor.stop()

    async def __aenter__(self) -> LlamaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- internals ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The server's argv (for the current port)."""
        return [
            sys.executable,
            "-m",
            "llama_cpp.server" if self.extra_buffers else "tiermesh.agents.models.serve",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            self.host,
            "--port",
            str(self._port),
            "--n_threads",
            str(self.n_threads),
            "--n_ctx",
            str(self.n_ctx),
            "--interrupt_requests",
            "False",
            *self.extra_args,
        ]

    async def _start_once(self, workdir: Path) -> None:
        spec = ProcessSpec(
            name=f"llama-server[{self.alias}]",
            argv=self.command(),
            log_path=workdir / f"llama-{self.alias}.log",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        supervisor = Supervisor(
            spec,
            policy=self.policy,
            health_check=http_health_check((self.host, self._port), "/v1/models"),
        )
        self._supervisor = supervisor
        await supervisor.start()
        try:
            await supervisor.wait_healthy(self.ready_timeout_s)
        except ChildExitedError as exc:
            raise self._classify(exc) from None
        except HealthTimeoutError as exc:
            raise ServerNotReadyError(self.base_url, exc.timeout_s, exc.log_tail) from None

    def _classify(self, exc: ChildExitedError) -> Exception:
        tail = exc.log_tail
        if _ADDRESS_IN_USE.search(tail):
            return PortInUseError(self.host, self._port, tail)
        load = _LOAD_ERROR.findall(tail)
        if load:
            return ModelLoadError(self.model_path, load[0].strip(), tail)
        return ServerExitedError(exc.reason, exc.exit_code, tail)


def _require_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the server's own bind: a port in TIME_WAIT is free, a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(host, port) from None
            raise
