"""Loading the request-time policy into an engine."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tiermesh.rego import JSONValue, PolicyEngine

__all__ = ["load_request_policy", "request_policy_modules"]


def request_policy_modules(directory: str | Path) -> dict[str, str]:
    """Every ``*.rego`` file directly in ``directory`` except ``*_test.rego``, by file name.

    Raises:
        OSError: the directory or a file cannot be read.
        ValueError: no policy file was found.
    """
    folder = Path(directory)
    modules = {
        f"{folder.name}/{path.name}": path.read_text(encoding="utf-8")
        for path in sorted(folder.glob("*.rego"))
        if not path.name.endswith("_test.rego")
    }
    if not modules:
        raise ValueError(f"no request policy (*.rego) in {folder}")
    return modules


def load_request_policy(
    engine: PolicyEngine, directory: str | Path, data: Mapping[str, JSONValue] | None = None
) -> None:
    """Load the policy of ``directory`` with ``data`` (``request_config``, optionally
    ``catalog``) into ``engine``, replacing what it held. Raises the engine's errors."""
    engine.load(request_policy_modules(directory), data)
