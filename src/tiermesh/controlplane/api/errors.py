"""Errors of the contracts module.

Messages name the file and the field path (``file: backends[2].tier: message``)
so that an operator can fix a catalog without reading a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CatalogError", "CatalogProblem", "ContractError"]


@dataclass(frozen=True, slots=True)
class CatalogProblem:
    """One problem in a catalog document.

    ``field`` is a path such as ``tenants[1].allowed_tiers[0]``; empty when the
    problem concerns the whole document (e.g. YAML syntax).
    """

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ContractError(Exception):
    """Root of every error raised by :mod:`tiermesh.controlplane.api`."""


class CatalogError(ContractError):
    """A catalog file could not be read, parsed or validated.

    ``file`` is the path as given; ``problems`` has at least one entry.
    ``str()`` gives one ``file: field: message`` line per problem.
    """

    def __init__(self, file: str, problems: Sequence[CatalogProblem]) -> None:
        if not problems:
            problems = [CatalogProblem("", "invalid catalog")]
        self.file = file
        self.problems: tuple[CatalogProblem, ...] = tuple(problems)
        super().__init__("\n".join(f"{file}: {problem}" for problem in self.problems))
