"""One problem (or notice) found in a bundle, located by file and line where possible."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Finding", "Stage"]


class Stage(enum.Enum):
    """Which step of reading, checking or compiling a bundle found the problem."""

    READ = "read"
    DATA = "data"
    CATALOG = "catalog"
    SCHEMA = "schema"
    REGO = "rego"
    TEST = "test"
    PROPERTY = "property"
    PLAN = "plan"
    VIOLATION = "violation"
    COMPILE = "compile"


@dataclass(frozen=True, slots=True)
class Finding:
    """A located message. Immutable; safe to share.

    ``file`` is a bundle path (``routing/routing.rego``, ``data/catalog.yaml``) or None;
    ``line`` is 1-based when known; ``node`` names the node whose plan or snapshot is
    concerned. :meth:`render` gives ``file:line: node N: message``, the format every
    command and log line uses.
    """

    stage: Stage
    message: str
    file: str | None = None
    line: int | None = None
    node: str | None = None

    def render(self, root: str | None = None) -> str:
        """The one-line form; ``root`` (a directory) is prefixed to ``file`` when given."""
        parts: list[str] = []
        if self.file is not None:
            where = f"{root.rstrip('/')}/{self.file}" if root else self.file
            parts.append(f"{where}:{self.line}" if self.line is not None else where)
        if self.node is not None:
            parts.append(f"node {self.node}")
        parts.append(self.message)
        return ": ".join(parts)

    def __str__(self) -> str:
        return self.render()
