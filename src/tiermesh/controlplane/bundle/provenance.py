"""Where a bundle came from: the git commit of its directory, via the ``git`` command."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final

from tiermesh.controlplane.store import JsonScalar

__all__ = ["git_provenance"]

_GIT_TIMEOUT_S: Final = 5.0


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_provenance(directory: Path) -> dict[str, JsonScalar]:
    """Git facts about ``directory``; empty when it is not in a git checkout.

    Keys: ``git_commit`` (HEAD, full hash), ``git_author`` (``Name <email>`` of HEAD),
    ``git_committed_at`` (ISO 8601), ``git_dirty`` (True when anything under the
    directory differs from HEAD, untracked files included) and ``git_path`` (the
    directory relative to the checkout's top). A repository without commits gives only
    ``git_dirty`` and ``git_path``. Never raises: a missing ``git`` binary or any git
    failure gives what could be learned. Blocks for up to a few seconds (subprocess).
    """
    directory = directory.resolve()
    top = _git(directory, "rev-parse", "--show-toplevel")
    if top is None:
        return {}
    facts: dict[str, JsonScalar] = {}
    top_path = Path(top.strip()).resolve()
    relative = directory.relative_to(top_path) if directory.is_relative_to(top_path) else None
    facts["git_path"] = relative.as_posix() if relative is not None else str(directory)
    head = _git(directory, "log", "-1", "--format=%H%x00%an <%ae>%x00%cI")
    if head:
        commit, author, committed_at = [*head.strip().split("\0"), "", ""][:3]
        facts["git_commit"] = commit
        facts["git_author"] = author
        facts["git_committed_at"] = committed_at
    status = _git(directory, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    if status is not None:
        facts["git_dirty"] = bool(status.strip())
    return facts
