"""The state file ``tiermesh up`` leaves for the other commands: where its mesh listens.

Path: ``$TIERMESH_STATE_FILE`` if set, else ``$XDG_STATE_HOME/tiermesh/up.json``
(``~/.local/state/tiermesh/up.json`` when ``XDG_STATE_HOME`` is unset), per the XDG base
directory spec: the file is per user, like the mesh ``up`` starts for that user.

Contents (JSON, version ``v1``)::

    {"version": "v1", "pid": <pid of tiermesh up>, "started_at": iso,
     "admin_url": "http://127.0.0.1:P", "dashboard_url": "http://127.0.0.1:Q/",
     "audit_db": "/…/controlplane/audit.sqlite3", "state_dir": "/…", "etcd": "127.0.0.1:E"}

``up`` writes it (mode 0600, atomically) once the mesh serves and removes it when it stops,
unless another ``up`` has written it since. :func:`read_running` returns it only while the
process ``pid`` lives, so a file left by a killed ``up`` reads as "nothing running".
``tiermesh status``, ``top`` and ``audit`` use it when not given ``--admin`` / ``--dashboard``
/ ``--db``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "STATE_FILE_ENV",
    "NotRunning",
    "UpState",
    "read_running",
    "remove_state",
    "state_file",
    "write_state",
]

STATE_FILE_ENV: Final = "TIERMESH_STATE_FILE"
STATE_VERSION: Final = "v1"


class NotRunning(Exception):
    """No ``tiermesh up`` is running (no state file, or its process is gone)."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"no running `tiermesh up` found ({detail}; state file {path})")


@dataclass(frozen=True, slots=True)
class UpState:
    """One running ``tiermesh up`` (module doc)."""

    pid: int
    started_at: str
    admin_url: str
    dashboard_url: str | None
    audit_db: str
    state_dir: str
    etcd: str | None = None
    version: str = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def state_file() -> Path:
    """Where the state file is (module doc)."""
    override = os.environ.get(STATE_FILE_ENV)
    if override:
        return Path(override)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tiermesh" / "up.json"


def write_state(state: UpState, path: Path | None = None) -> Path:
    """Write ``state`` atomically (mode 0600); returns the path."""
    target = path or state_file()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".up-", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(state.to_json(), handle, indent=2)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def remove_state(pid: int, path: Path | None = None) -> None:
    """Remove the state file if it still names ``pid`` (another ``up`` may own it now)."""
    target = path or state_file()
    try:
        if int(json.loads(target.read_text()).get("pid", -1)) == pid:
            target.unlink(missing_ok=True)
    except (OSError, ValueError, AttributeError, TypeError):
        return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_running(path: Path | None = None) -> UpState:
    """The running ``up``'s state.

    Raises:
        NotRunning: no state file, an unreadable one, or its process is gone.
    """
    target = path or state_file()
    try:
        document = json.loads(target.read_text())
    except FileNotFoundError:
        raise NotRunning(target, "no state file: start the mesh with `tiermesh up`") from None
    except (OSError, ValueError) as exc:
        raise NotRunning(target, f"unreadable state file: {exc}") from exc
    try:
        state = UpState(
            pid=int(document["pid"]),
            started_at=str(document["started_at"]),
            admin_url=str(document["admin_url"]),
            dashboard_url=document.get("dashboard_url"),
            audit_db=str(document["audit_db"]),
            state_dir=str(document["state_dir"]),
            etcd=document.get("etcd"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise NotRunning(target, f"malformed state file: {exc!r}") from exc
    if not _alive(state.pid):
        raise NotRunning(target, f"the `tiermesh up` that wrote it (pid {state.pid}) has exited")
    return state
