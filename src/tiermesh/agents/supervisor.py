"""Supervise one child process: start it, watch its health, restart it with backoff, stop it.

The agent runs Envoy and the local model server under a `Supervisor` each. A supervisor
owns exactly one child at a time, started in its own session (so its PID is also its
process-group ID) with stdout and stderr appended to a log file. It is asyncio-based: every
method must be called from the event loop that called `Supervisor.start`, and it is not
thread-safe.

Lifecycle: ``STOPPED → STARTING → RUNNING`` (healthy; without a health check, up for
``settle_s``), ``RUNNING → UNHEALTHY`` (checks failing) and, after an exit or too many
failed checks, ``BACKOFF`` then ``STARTING`` again. Restart delays double from
``RestartPolicy.base_delay_s`` up to ``max_delay_s``; the doubling starts over once a child
has run healthy for ``reset_after_s``. With ``max_restarts`` set, the supervisor gives up in
``FAILED``. `Supervisor.stop` always ends in ``STOPPED`` with no process of the group left.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from tiermesh.tasks import cancel_and_wait

__all__ = [
    "ChildExitedError",
    "HealthCheck",
    "HealthTimeoutError",
    "ProcessSpec",
    "ProcessState",
    "RestartPolicy",
    "StateCallback",
    "Supervisor",
    "SupervisorError",
    "SupervisorStatus",
    "http_health_check",
    "open_stream",
]

_log = logging.getLogger(__name__)

START_MARKER: Final = "--- tiermesh supervisor: start"

HealthCheck = Callable[[], Awaitable[bool]]
"""Returns True when the child is healthy. False, an exception or a timeout count as a
failed check; the supervisor never lets one escape."""


class ProcessState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What to run. ``env=None`` inherits the agent's environment; a mapping replaces it."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How restarts and health checks are paced. All times in seconds."""

    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    reset_after_s: float = 60.0
    max_restarts: int | None = None
    """Consecutive failed starts after which the supervisor gives up (None: never)."""
    settle_s: float = 0.5
    """Without a health check, a child counts as RUNNING once it has stayed up this long."""
    start_timeout_s: float = 60.0
    """A child not healthy this long after its start is killed and counts as a failure."""
    check_interval_s: float = 1.0
    startup_check_interval_s: float = 0.05
    check_timeout_s: float = 2.0
    unhealthy_after: int = 3
    """Consecutive failed checks of a RUNNING child before it is killed and restarted."""
    stop_grace_s: float = 5.0

    def delay(self, consecutive_failures: int) -> float:
        """Backoff before restart number ``consecutive_failures`` (1-based)."""
        exponent = max(consecutive_failures - 1, 0)
        return float(min(self.max_delay_s, self.base_delay_s * 2.0 ** min(exponent, 62)))


@dataclass(frozen=True, slots=True)
class SupervisorStatus:
    """A snapshot of a supervisor's state; immutable, safe to hand to callbacks."""

    name: str
    state: ProcessState
    pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    next_delay_s: float | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None and self.state in _ALIVE

    @property
    def healthy(self) -> bool:
        return self.state is ProcessState.RUNNING


_ALIVE: Final = frozenset({ProcessState.STARTING, ProcessState.RUNNING, ProcessState.UNHEALTHY})

StateCallback = Callable[[SupervisorStatus], None]
"""Called on the event loop after every state change; exceptions are logged and dropped."""


class SupervisorError(Exception):
    """Root of the supervisor's errors."""


class ChildExitedError(SupervisorError):
    """The child exited (or could not be started) before it became healthy."""

    def __init__(self, name: str, exit_code: int | None, reason: str, log_tail: str) -> None:
        self.name = name
        self.exit_code = exit_code
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"{name} stopped before it became healthy: {reason}\n{_tail(log_tail)}")


class HealthTimeoutError(SupervisorError):
    """The child did not become healthy within the time a caller allowed."""

    def __init__(self, name: str, timeout_s: float, log_tail: str) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.log_tail = log_tail
        super().__init__(f"{name} not healthy after {timeout_s:g}s\n{_tail(log_tail)}")


def _tail(log_tail: str) -> str:
    return f"--- log (tail) ---\n{log_tail}" if log_tail else "(empty log)"


class Supervisor:
    """Keeps one child process of `ProcessSpec` alive; see the module docstring.

    Owns the child (killed by process group on `stop`) and appends to ``spec.log_path``
    (never deletes it). ``health_check`` is polled while the child is up.
    """

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        policy: RestartPolicy | None = None,
        health_check: HealthCheck | None = None,
        on_change: StateCallback | None = None,
    ) -> None:
        self.spec = spec
        self.policy = policy or RestartPolicy()
        self._health_check = health_check
        self._on_change = on_change
        self._status = SupervisorStatus(name=spec.name, state=ProcessState.STOPPED)
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._exits = 0

    # -- queries -----------------------------------------------------------------------------

    @property
    def status(self) -> SupervisorStatus:
        return self._status

    @property
    def pid(self) -> int | None:
        return self._status.pid

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the current (or last) child wrote, '' if none."""
        try:
            text = self.spec.log_path.read_text(errors="replace")
        except OSError:
            return ""
        last_start = text.rfind(START_MARKER)
        if last_start >= 0:
            text = text[last_start:].split("\n", 1)[1] if "\n" in text[last_start:] else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start supervising; returns once the first start was attempted. Idempotent."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = asyncio.Event()
        self._status = SupervisorStatus(name=self.spec.name, state=ProcessState.STOPPED)
        first_attempt = asyncio.Event()
        self._task = asyncio.create_task(
            self._run(first_attempt), name=f"supervise-{self.spec.name}"
        )
        await first_attempt.wait()

    async def wait_healthy(self, timeout_s: float) -> None:
        """Wait until the child is RUNNING.

        Raises `ChildExitedError` when the last child already ended (``BACKOFF``/``FAILED``)
        or one exits or fails to start during the wait (the supervisor itself keeps
        restarting it until `stop`), `HealthTimeoutError` after ``timeout_s``, and
        `SupervisorError` when the supervisor is not started.
        """
        exits_before = self._exits
        ended = {ProcessState.BACKOFF, ProcessState.FAILED}
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    status = self._status
                    if self._exits > exits_before or status.state in ended:
                        raise ChildExitedError(
                            self.spec.name,
                            status.last_exit_code,
                            status.last_error or "exited",
                            self.log_tail(),
                        )
                    if status.state is ProcessState.RUNNING:
                        return
                    if status.state is ProcessState.STOPPED:
                        raise SupervisorError(f"{self.spec.name} is not being supervised")
                    await self._changed.wait()
        except TimeoutError:
            raise HealthTimeoutError(self.spec.name, timeout_s, self.log_tail()) from None

    async def stop(self) -> None:
        """Stop the child (SIGTERM to its group, SIGKILL after ``stop_grace_s``) and stop
        supervising. Leaves nothing of the group running. Idempotent."""
        self._stopping.set()
        task = self._task
        if task is not None:
            await asyncio.shield(task)
            self._task = None
        if self._status.state is not ProcessState.STOPPED:
            self._set(state=ProcessState.STOPPED, pid=None)

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self, first_attempt: asyncio.Event) -> None:
        try:
            while not self._stopping.is_set():
                healthy_for = await self._run_once(first_attempt)
                if self._stopping.is_set():
                    break
                failures = self._status.consecutive_failures
                failures = 1 if healthy_for >= self.policy.reset_after_s else failures + 1
                limit = self.policy.max_restarts
                if limit is not None and failures > limit:
                    self._set(
                        state=ProcessState.FAILED,
                        pid=None,
                        consecutive_failures=failures,
                        last_error=f"gave up after {limit} restarts: {self._status.last_error}",
                    )
                    return
                delay = self.policy.delay(failures)
                self._set(
                    state=ProcessState.BACKOFF,
                    pid=None,
                    consecutive_failures=failures,
                    restarts=self._status.restarts + 1,
                    next_delay_s=delay,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
        finally:
            first_attempt.set()
            if self._status.state is not ProcessState.FAILED:
                self._set(state=ProcessState.STOPPED, pid=None, next_delay_s=None)

    async def _run_once(self, first_attempt: asyncio.Event) -> float:
        """Start one child and wait for its end; returns how long it ran healthy."""
        try:
            proc = await self._spawn()
        except OSError as exc:
            self._exits += 1
            self._set(last_exit_code=None, last_error=f"could not start {self.spec.argv[0]}: {exc}")
            first_attempt.set()
            return 0.0
        self._proc = proc
        self._set(state=ProcessState.STARTING, pid=proc.pid, next_delay_s=None)
        first_attempt.set()
        healthy_since: list[float] = []
        watcher = asyncio.create_task(self._watch_health(proc, healthy_since))
        stopper = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait(
                {watcher, stopper, asyncio.ensure_future(proc.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopper.cancel()
            if self._stopping.is_set():
                self._set(state=ProcessState.STOPPING)
            reason = await self._terminate(proc, watcher)
            self._proc = None
        ran_healthy = time.monotonic() - healthy_since[0] if healthy_since else 0.0
        if not self._stopping.is_set():
            code = proc.returncode
            self._exits += 1
            self._set(last_exit_code=code, last_error=reason or _describe_exit(code))
        return ran_healthy

    async def _spawn(self) -> asyncio.subprocess.Process:
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"{START_MARKER} {stamp} {' '.join(spec.argv)}\n".encode())
            log.flush()
            return await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(spec.env) if spec.env is not None else None,
                cwd=spec.cwd,
                start_new_session=True,
            )

    async def _watch_health(self, proc: asyncio.subprocess.Process, since: list[float]) -> str:
        """Returns (ending the child's run) only when the child must be killed: why."""
        policy = self.policy
        started = time.monotonic()
        if self._health_check is None:
            await asyncio.sleep(policy.settle_s)
            since.append(time.monotonic())
            self._set(state=ProcessState.RUNNING)
            await asyncio.Event().wait()  # never returns; cancelled at the end of the run
        failures = 0
        while True:
            ok = await self._check()
            state = self._status.state
            if ok:
                failures = 0
                if state is not ProcessState.RUNNING:
                    if not since:
                        since.append(time.monotonic())
                    self._set(state=ProcessState.RUNNING)
            elif state is ProcessState.STARTING:
                if time.monotonic() - started > policy.start_timeout_s:
                    return f"not healthy within {policy.start_timeout_s:g}s of its start"
            else:
                failures += 1
                if failures >= policy.unhealthy_after:
                    return f"{failures} health checks failed in a row"
                self._set(state=ProcessState.UNHEALTHY)
            starting = self._status.state is ProcessState.STARTING
            await asyncio.sleep(
                policy.startup_check_interval_s if starting else policy.check_interval_s
            )

    async def _check(self) -> bool:
        assert self._health_check is not None
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that arrives as the check completes, and the watcher then never stopped (a stop
        # that waited for it hung with the child still running).
        try:
            async with asyncio.timeout(self.policy.check_timeout_s):
                return bool(await self._health_check())
        except Exception:  # noqa: BLE001 - any failure of a check is an unhealthy answer
            return False

    async def _terminate(
        self, proc: asyncio.subprocess.Process, watcher: asyncio.Task[str]
    ) -> str | None:
        """Stop the child's whole group; returns the watcher's kill reason, if it had one."""
        reason: str | None = None
        if watcher.done() and not watcher.cancelled():
            reason = watcher.result()
        await cancel_and_wait([watcher])
        pgid = proc.pid  # start_new_session: the child leads its own group
        if proc.returncode is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                async with asyncio.timeout(self.policy.stop_grace_s):
                    await proc.wait()
            except TimeoutError:
                _signal_group(pgid, signal.SIGKILL)
                await proc.wait()
        # Sweep what the child left in its group; the group ID cannot be reused while any
        # member lives, so this never reaches an unrelated process.
        _signal_group(pgid, signal.SIGKILL)
        return reason

    def _set(self, **changes: object) -> None:
        self._status = replace(self._status, **changes)  # type: ignore[arg-type]
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_change is not None:
            try:
                self._on_change(self._status)
            except Exception:  # noqa: BLE001 - a callback must not break supervision
                _log.exception("state callback of %s failed", self.spec.name)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


async def open_stream(
    target: tuple[str, int] | Path,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to ``target``: ``(host, port)`` over TCP, a path as a Unix socket."""
    if isinstance(target, Path):
        return await asyncio.open_unix_connection(str(target))
    return await asyncio.open_connection(*target)


def http_health_check(
    target: tuple[str, int] | Path, path: str = "/", *, timeout_s: float = 2.0
) -> HealthCheck:
    """A `HealthCheck` that is healthy when ``GET path`` at ``target`` (``(host, port)``,
    or the path of a Unix socket) answers 2xx.

    Plain HTTP/1.1 over asyncio streams: no client library, no proxy settings.
    """
    host = "localhost" if isinstance(target, Path) else f"{target[0]}:{target[1]}"

    async def check() -> bool:
        async with asyncio.timeout(timeout_s):
            reader, writer = await open_stream(target)
            try:
                request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                writer.write(request.encode())
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        parts = status_line.split()
        return len(parts) >= 2 and parts[1].startswith(b"2")

    return check
