"""The ``PolicyEngine`` protocol and the types every engine shares.

An engine holds one *policy set*: Rego v1 modules (module name -> source text)
and one data document (a JSON object mounted at ``data``). ``load`` replaces the
whole set; ``evaluate`` reads one document under ``data`` with an input.

Paths are plain references ``data.<segment>(.<segment>)*`` where each segment
is a Rego identifier (``data.tiermesh.routing.plan``); quoted segments
(``data["a-b"]``) and ad-hoc queries are not part of the contract.

Results are JSON values exactly as OPA serialises them: Rego sets become sorted
arrays. A path that is undefined (no rule, or no rule body succeeded and no
default) evaluates to :data:`UNDEFINED`, never ``None``: ``None`` is Rego's
``null``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias, runtime_checkable

from tiermesh.rego.errors import PolicyEvalError

__all__ = [
    "UNDEFINED",
    "JSONValue",
    "PolicyEngine",
    "RegoTestResult",
    "Undefined",
    "check_path",
]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"


class Undefined(enum.Enum):
    """Type of :data:`UNDEFINED`, the result of evaluating an undefined document."""

    UNDEFINED = "undefined"

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined.UNDEFINED
"""Evaluation produced no value. Distinct from ``None`` (Rego ``null``)."""


@dataclass(frozen=True, slots=True)
class RegoTestResult:
    """Outcome of one Rego ``test_*`` rule.

    A test passes when its rule is defined and not ``false`` (OPA's rule);
    ``error`` is set when evaluating it raised, and then ``passed`` is False.
    """

    file: str
    package: str
    name: str
    passed: bool
    error: str | None = None

    @property
    def path(self) -> str:
        return f"data.{self.package}.{self.name}"


@runtime_checkable
class PolicyEngine(Protocol):
    """A Rego engine holding one policy set.

    Contract shared by every implementation (see each class for its thread rules):

    - ``load`` replaces all modules and all data. Modules are checked (parsed
      and compiled) before anything is replaced: on :class:`RegoParseError`
      the previous set stays active. Rego v1 syntax (``if``, ``contains``) is
      required; v0 rule bodies are parse errors.
    - Before the first ``load`` the set is empty and every path is undefined.
    - ``evaluate`` returns the JSON value at ``path`` or :data:`UNDEFINED`;
      ``input=None`` means no input document (``input`` is undefined).
      Run-time failures raise :class:`PolicyEvalError`.
    - ``run_tests`` evaluates every ``test_*`` rule of the loaded modules,
      with the loaded data and no input, in module-name then source order.
    - After ``close`` every call raises :class:`EngineClosed`; ``close`` is
      idempotent.
    """

    @property
    def name(self) -> str:
        """Short engine name used in errors and benchmarks (``regorus``, ``opa``, ...)."""
        ...

    def load(
        self, modules: Mapping[str, str], data: Mapping[str, JSONValue] | None = None
    ) -> None: ...

    def evaluate(self, path: str, input: JSONValue = None) -> JSONValue | Undefined: ...

    def run_tests(self) -> list[RegoTestResult]: ...

    def close(self) -> None: ...


_PATH = re.compile(r"data(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def check_path(path: str, *, engine: str) -> tuple[str, ...]:
    """Return the segments after ``data`` of a valid path.

    Raises :class:`PolicyEvalError` for anything that is not a plain
    ``data.a.b`` reference.
    """
    if _PATH.fullmatch(path) is None:
        raise PolicyEvalError(
            path, "a path must look like data.<package>.<rule> (identifiers only)", engine=engine
        )
    return tuple(path.split(".")[1:])
