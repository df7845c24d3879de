"""``tiermesh status``, ``top`` and ``audit`` find the mesh ``tiermesh up`` recorded in its
state file, without flags, and say clearly when nothing runs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.dashboard.served import Served, served
from tests.unit.dashboard.helpers import signed_db
from tiermesh.cli.up_state import (
    NotRunning,
    UpState,
    read_running,
    remove_state,
    state_file,
    write_state,
)

TIERMESH = str(Path(sys.executable).with_name("tiermesh"))


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERMESH, *args], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "COLUMNS": "200", **env},
    )  # fmt: skip


def up_state(pid: int, servers: Served | None, db: Path) -> UpState:
    return UpState(
        pid=pid,
        started_at=dt.datetime.now(dt.UTC).isoformat(),
        admin_url=servers.admin_url if servers else "http://127.0.0.1:9",
        dashboard_url=servers.dashboard_url if servers else None,
        audit_db=str(db),
        state_dir=str(db.parent),
    )


@pytest.fixture
def servers() -> Iterator[Served]:
    with served() as running:
        yield running


def test_the_state_file_path_and_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERMESH_STATE_FILE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_file() == tmp_path / "xdg" / "tiermesh" / "up.json"
    path = write_state(up_state(os.getpid(), None, tmp_path / "audit.sqlite3"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_running().pid == os.getpid()
    remove_state(os.getpid() + 1)  # another up's: left alone
    assert path.exists()
    remove_state(os.getpid())
    with pytest.raises(NotRunning, match="no state file"):
        read_running()


def test_a_file_left_by_a_dead_up_reads_as_nothing_running(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = write_state(up_state(dead.pid, None, tmp_path / "db"), tmp_path / "up.json")
    with pytest.raises(NotRunning, match=f"pid {dead.pid}.*has exited"):
        read_running(path)


def test_commands_say_clearly_when_nothing_runs(tmp_path: Path) -> None:
    env = {"TIERMESH_STATE_FILE": str(tmp_path / "none.json"), "TIERMESH_AUDIT_DB": ""}
    top = run(env, "top", "--once")
    assert top.returncode == 1
    assert "no running `tiermesh up` found" in top.stderr
    audit = run(env, "audit", "verify")
    assert audit.returncode == 2
    assert "no audit database" in audit.stderr
    assert "no running `tiermesh up` found" in audit.stderr


async def test_status_top_and_audit_find_the_running_mesh(tmp_path: Path, servers: Served) -> None:
    db = await signed_db(tmp_path, [{"allow": True, "tier": "local"}])
    path = write_state(up_state(os.getpid(), servers, db), tmp_path / "up.json")
    env = {"TIERMESH_STATE_FILE": str(path), "TIERMESH_AUDIT_DB": ""}

    status = run(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"trust_domain": "mesh.example"' in status.stdout

    top = run(env, "top", "--once")
    assert top.returncode == 0, top.stderr
    assert "Tier use" in top.stdout
    assert "since start" in top.stdout
    assert "28.6%" in top.stdout  # 2 fallbacks of 7 answers
    assert "edge-1" in top.stdout

    audit = run(env, "audit", "verify")
    assert audit.returncode == 0, audit.stderr
    assert "ok: 1 records of 1 node(s)" in audit.stdout
