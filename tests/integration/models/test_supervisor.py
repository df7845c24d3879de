"""The supervisor against real child processes: backoff, health, giving up, clean stop."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tiermesh.agents.supervisor import (
    ChildExitedError,
    ProcessSpec,
    ProcessState,
    RestartPolicy,
    Supervisor,
    SupervisorStatus,
)

FAST = RestartPolicy(
    base_delay_s=0.05,
    max_delay_s=0.2,
    reset_after_s=60.0,
    check_interval_s=0.05,
    startup_check_interval_s=0.02,
    unhealthy_after=2,
    stop_grace_s=0.5,
    settle_s=0.05,
)


def _spec(tmp_path: Path, code: str, name: str = "child") -> ProcessSpec:
    return ProcessSpec(
        name=name, argv=[sys.executable, "-c", code], log_path=tmp_path / "child.log"
    )


async def _until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_crashing_child_is_restarted_with_doubling_backoff(tmp_path: Path) -> None:
    seen: list[SupervisorStatus] = []
    crash = "import sys; print('about to crash', file=sys.stderr); sys.exit(3)"
    supervisor = Supervisor(_spec(tmp_path, crash), policy=FAST, on_change=seen.append)
    await supervisor.start()
    try:
        await _until(lambda: supervisor.status.restarts >= 4)
    finally:
        await supervisor.stop()
    delays = [s.next_delay_s for s in seen if s.state is ProcessState.BACKOFF]
    assert delays[:4] == [0.05, 0.1, 0.2, 0.2]
    assert supervisor.status.last_exit_code == 3
    assert supervisor.status.last_error == "exited with code 3"
    assert supervisor.status.state is ProcessState.STOPPED
    assert supervisor.log_tail() == "about to crash"
    assert (tmp_path / "child.log").read_text().count("about to crash") >= 4


async def test_backoff_starts_over_after_a_healthy_run(tmp_path: Path) -> None:
    policy = RestartPolicy(base_delay_s=0.05, max_delay_s=1.0, reset_after_s=0.1, settle_s=0.05)
    supervisor = Supervisor(_spec(tmp_path, "import time; time.sleep(0.3)"), policy=policy)
    await supervisor.start()
    try:
        await _until(lambda: supervisor.status.restarts >= 2)
        assert supervisor.status.consecutive_failures == 1
        assert supervisor.status.next_delay_s == 0.05
    finally:
        await supervisor.stop()


async def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    supervisor = Supervisor(_spec(tmp_path, code), policy=FAST)
    await supervisor.start()
    await supervisor.wait_healthy(5.0)
    await _until(lambda: pid_file.exists() and pid_file.read_text() != "")
    child, grandchild = supervisor.pid, int(pid_file.read_text())
    assert child is not None
    assert psutil.pid_exists(child)
    assert psutil.pid_exists(grandchild)
    started = time.monotonic()
    await supervisor.stop()
    assert time.monotonic() - started < 3.0
    await _until(lambda: not psutil.pid_exists(grandchild), within=3.0)
    assert not psutil.pid_exists(child)
    assert supervisor.status.state is ProcessState.STOPPED
    assert supervisor.pid is None


async def test_a_child_that_keeps_failing_reports_its_last_error(tmp_path: Path) -> None:
    policy = RestartPolicy(base_delay_s=0.01, max_delay_s=0.02, max_restarts=2, settle_s=0.2)
    code = "import sys; print('config invalid: port missing', file=sys.stderr); sys.exit(7)"
    supervisor = Supervisor(_spec(tmp_path, code, name="broken"), policy=policy)
    await supervisor.start()
    with pytest.raises(ChildExitedError) as caught:
        await supervisor.wait_healthy(5.0)
    assert caught.value.exit_code == 7
    assert "config invalid: port missing" in str(caught.value)
    await _until(lambda: supervisor.status.state is ProcessState.FAILED)
    status = supervisor.status
    assert status.restarts == 2
    assert status.last_exit_code == 7
    assert status.last_error == "gave up after 2 restarts: exited with code 7"
    assert not status.running
    await supervisor.stop()
    assert supervisor.status.state is ProcessState.STOPPED


async def test_a_missing_binary_is_reported(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-binary")
    spec = ProcessSpec(name="ghost", argv=[missing], log_path=tmp_path / "ghost.log")
    supervisor = Supervisor(spec, policy=RestartPolicy(base_delay_s=0.01, max_restarts=1))
    await supervisor.start()
    with pytest.raises(ChildExitedError, match="could not start"):
        await supervisor.wait_healthy(5.0)
    await _until(lambda: supervisor.status.state is ProcessState.FAILED)
    assert missing in (supervisor.status.last_error or "")
    await supervisor.stop()


async def test_failing_health_checks_restart_the_child(tmp_path: Path) -> None:
    answers = iter([True, True])

    async def check() -> bool:
        return next(answers, False)

    seen: list[ProcessState] = []
    supervisor = Supervisor(
        _spec(tmp_path, "import time; time.sleep(60)"),
        policy=FAST,
        health_check=check,
        on_change=lambda s: seen.append(s.state),
    )
    await supervisor.start()
    try:
        await supervisor.wait_healthy(5.0)
        first = supervisor.pid
        await _until(
            lambda: (
                supervisor.status.restarts >= 1 and supervisor.status.state is ProcessState.STARTING
            )
        )
        assert first is not None
        assert not psutil.pid_exists(first)
        assert supervisor.status.last_error == "2 health checks failed in a row"
    finally:
        await supervisor.stop()
    order = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] is not s]
    assert order[:5] == [
        ProcessState.STARTING,
        ProcessState.RUNNING,
        ProcessState.UNHEALTHY,
        ProcessState.BACKOFF,
        ProcessState.STARTING,
    ]
    assert seen[-1] is ProcessState.STOPPED


async def test_a_raising_callback_does_not_stop_supervision(tmp_path: Path) -> None:
    def explode(status: SupervisorStatus) -> None:
        raise RuntimeError("callback bug")

    supervisor = Supervisor(
        _spec(tmp_path, "import time; time.sleep(60)"), policy=FAST, on_change=explode
    )
    async with supervisor:
        await supervisor.wait_healthy(5.0)
        assert supervisor.status.running
    assert supervisor.status.state is ProcessState.STOPPED
