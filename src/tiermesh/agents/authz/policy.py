"""Loading the request-time policy into an engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from tiermesh.agents.authz.decide import probe_policy
from tiermesh.agents.authz.errors import PolicyRejected
from tiermesh.rego import JSONValue, PolicyEngine

__all__ = ["build_request_engine", "load_request_policy", "request_policy_modules"]


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


def build_request_engine(
    factory: Callable[[], PolicyEngine],
    modules: Mapping[str, str],
    data: Mapping[str, JSONValue],
    *,
    revision: str | None = None,
) -> PolicyEngine:
    """A new engine from ``factory`` holding ``modules`` and ``data`` that passed
    :func:`~tiermesh.agents.authz.decide.probe_policy`; the caller owns it. Evaluates once
    on the calling thread (regorus then has that thread's engines built).

    Raises:
        PolicyRejected: the engine refused the modules or the probe failed (``revision``
            names the policy in the message); the new engine is closed.
    """
    engine = factory()
    try:
        try:
            engine.load(modules, data)
        except Exception as exc:  # the engine's own errors, whatever the engine
            raise PolicyRejected(f"{type(exc).__name__}: {exc}", revision=revision) from exc
        try:
            probe_policy(engine)
        except PolicyRejected as exc:
            raise PolicyRejected(exc.reason, revision=revision) from exc
    except BaseException:
        engine.close()
        raise
    return engine
