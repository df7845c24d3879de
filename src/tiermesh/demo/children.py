"""``tiermesh`` subcommands as child processes of ``tiermesh up``.

Each child runs in its own session (its PID is its process group), so a Ctrl-C in the
terminal reaches only ``tiermesh up``, which then stops the children in order (agents
first, so they say goodbye while the control plane still listens). stdout lines are queued
for :meth:`Child.wait_line`; stderr goes to a log file whose tail names the cause when a
child fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import IO

__all__ = ["Child", "ChildFailed", "tiermesh_command"]


def tiermesh_command() -> list[str]:
    """argv prefix that runs this installation's ``tiermesh`` (the console script beside
    the running interpreter, else the one on PATH)."""
    beside = Path(sys.executable).with_name("tiermesh")
    found = str(beside) if beside.is_file() else shutil.which("tiermesh")
    if found is None:
        raise FileNotFoundError("the tiermesh command is not installed beside this Python")
    return [found]


class ChildFailed(RuntimeError):
    """A child exited or did not print its ready line in time; the message names it and
    ends with the tail of its log."""

    def __init__(self, name: str, reason: str, log_tail: str) -> None:
        self.name = name
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"{name} {reason}" + (f"\n{log_tail}" if log_tail else ""))


class Child:
    """One child process; not thread-safe (one owner), blocking methods (call them with
    ``asyncio.to_thread`` from a loop)."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._lines: Queue[str] = Queue()
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        self._pump = threading.Thread(
            target=self._read, args=(self.proc.stdout,), name=f"{name}-stdout", daemon=True
        )
        self._pump.start()
        self.output: list[str] = []

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_line(self, needle: str, timeout_s: float) -> str:
        """The first stdout line containing ``needle``. Raises :class:`ChildFailed`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except Empty:
                if self.proc.poll() is not None and self._lines.empty():
                    self._pump.join(timeout=1)
                    if self._lines.empty():
                        raise ChildFailed(
                            self.name, f"exited with {self.proc.returncode}", self.log_tail()
                        ) from None
                continue
            self.output.append(line)
            if needle in line:
                return line
        raise ChildFailed(self.name, f"not ready after {timeout_s:g}s", self.log_tail())

    def stdout_lines(self) -> list[str]:
        """Every stdout line read so far (those :meth:`wait_line` consumed first)."""
        while True:
            try:
                self.output.append(self._lines.get_nowait())
            except Empty:
                return list(self.output)

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for the child to exit by itself; its exit code. Raises :class:`ChildFailed`."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ChildFailed(self.name, f"still running after {timeout_s:g}s", "") from None
        self._close()
        return code

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 15.0) -> int | None:
        """Signal the child's process group, wait ``grace_s``, then SIGKILL the group.
        Returns the exit code. Idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Whatever the child left in its group (it should have stopped it) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        self._pump.join(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
