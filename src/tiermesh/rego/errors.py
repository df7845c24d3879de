"""Errors raised by the policy engines.

Every engine maps its own failures onto this hierarchy, so callers never catch
``regorus``, ``opa_bindings`` or ``requests`` exceptions. Messages carry
``file:line`` wherever the engine reported a location.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "EngineClosed",
    "EngineUnavailable",
    "PolicyError",
    "PolicyEvalError",
    "RegoCompileError",
    "RegoParseError",
    "RegoProblem",
]


@dataclass(frozen=True, slots=True)
class RegoProblem:
    """One diagnostic reported by an engine, located in a module when known.

    ``file`` is the module name given to ``PolicyEngine.load`` (or ``None`` when
    the engine named no file); ``line`` and ``column`` are 1-based.
    """

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


class PolicyError(Exception):
    """Root of every error raised by the policy engines."""


class RegoParseError(PolicyError):
    """Rego modules were rejected at load time; the previously loaded set stays active.

    ``problems`` holds one entry per diagnostic (at least one); ``file`` and
    ``line`` are those of the first. ``str()`` gives one ``file:line: message``
    line per problem.
    """

    def __init__(self, problems: Sequence[RegoProblem], *, engine: str) -> None:
        if not problems:
            problems = [RegoProblem("the engine rejected the modules without a diagnostic")]
        self.problems: tuple[RegoProblem, ...] = tuple(problems)
        self.engine = engine
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def file(self) -> str | None:
        return self.problems[0].file

    @property
    def line(self) -> int | None:
        return self.problems[0].line


class RegoCompileError(RegoParseError):
    """Modules parsed but failed compilation (unsafe variable, conflicting rules, ...)."""


class PolicyEvalError(PolicyError):
    """Evaluating a path failed at run time (builtin error, conflicting outputs, ...).

    ``location`` is where the engine said it failed, when it said so.
    """

    def __init__(
        self, path: str, message: str, *, engine: str, location: RegoProblem | None = None
    ) -> None:
        self.path = path
        self.reason = message
        self.engine = engine
        self.location = location
        where = f"{location}" if location is not None else message
        super().__init__(f"{engine}: evaluating {path} failed: {where}")


class EngineUnavailable(PolicyError):
    """The engine cannot be used here: its library is missing, or its server is unreachable.

    ``url`` names the server for remote engines.
    """

    def __init__(self, engine: str, reason: str, *, url: str | None = None) -> None:
        self.engine = engine
        self.reason = reason
        self.url = url
        at = f" at {url}" if url else ""
        super().__init__(f"policy engine {engine!r}{at} is unavailable: {reason}")


class EngineClosed(PolicyError):
    """The engine was used after ``close()``."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        super().__init__(f"policy engine {engine!r} is closed")
