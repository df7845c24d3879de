"""Masking a policy input before it is recorded: what the audit trail must never hold.

A :class:`MaskRule` names a place in the input with a JSON-pointer-like path (``/``-
separated keys or list indexes, ``~1`` for ``/`` and ``~0`` for ``~`` inside a key, ``*``
for every key or index at that level) and an action:

- ``erase``: remove the value (the key disappears from its object; a list item is removed);
- ``hash``: replace the value by ``"sha256:<hex>"`` — the SHA-256 of the string's UTF-8
  bytes, or of the canonical JSON (sorted keys, no whitespace) of any other value — so
  equal bodies can still be matched without being readable.

A path that does not exist in an input is skipped. :data:`DEFAULT_RULES` keep no prompt
text: the request body and the message/prompt fields are hashed or erased, at the top level
and under ``request``; detector findings, token estimates, tenant and headers stay. A
deployment with another input shape must give its own rules.

Pure functions over immutable rules; thread-safe. The input is never modified in place.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tiermesh.agents.decisionlog.errors import MaskingError

__all__ = ["DEFAULT_RULES", "MaskAction", "MaskRule", "Masking", "hash_value"]

MaskAction = Literal["erase", "hash"]
_ACTIONS: tuple[MaskAction, ...] = ("erase", "hash")
_WILDCARD = "*"


def hash_value(value: Any) -> str:
    """``sha256:<hex>`` of ``value`` (a string's UTF-8, else its canonical JSON)."""
    if isinstance(value, str):
        data = value.encode()
    else:
        data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class MaskRule:
    """One place to erase or hash. Build it with :meth:`parse` or directly."""

    path: str
    action: MaskAction

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise MaskingError(self.path, f"action must be one of {_ACTIONS}")
        if not self.path.startswith("/") or self.path == "/":
            raise MaskingError(self.path, "a path starts with '/' and names at least one key")

    @classmethod
    def parse(cls, text: str) -> MaskRule:
        """``erase:/request/messages`` or ``hash:/body``.

        Raises:
            MaskingError: no ``action:`` prefix, an unknown action or a bad path.
        """
        action, sep, path = text.partition(":")
        if not sep or action not in _ACTIONS:
            raise MaskingError(text, "expected 'erase:/path' or 'hash:/path'")
        return cls(path, action)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(
            part.replace("~1", "/").replace("~0", "~") for part in self.path[1:].split("/")
        )


_DEFAULT_PLACES: tuple[tuple[str, MaskAction], ...] = (
    ("/body", "hash"),
    ("/messages", "erase"),
    ("/prompt", "erase"),
    ("/text", "erase"),
    ("/content", "erase"),
)

DEFAULT_RULES: tuple[MaskRule, ...] = tuple(
    MaskRule(prefix + path, action)
    for prefix in ("", "/request")
    for path, action in _DEFAULT_PLACES
)
"""No prompt text: hash ``body``, erase ``messages``, ``prompt``, ``text`` and ``content``,
both at the top of the input and under ``request``."""


class Masking:
    """An ordered set of rules applied to every recorded input. Immutable, thread-safe."""

    def __init__(self, rules: Iterable[MaskRule] = DEFAULT_RULES) -> None:
        self._rules = tuple(rules)
        self._compiled = tuple((rule.segments, rule.action) for rule in self._rules)

    @classmethod
    def from_strings(cls, rules: Sequence[str]) -> Masking:
        """Rules in :meth:`MaskRule.parse` syntax. Raises :class:`MaskingError`."""
        return cls(MaskRule.parse(rule) for rule in rules)

    @property
    def rules(self) -> tuple[MaskRule, ...]:
        return self._rules

    def apply(self, value: Any) -> Any:
        """``value`` with the rules applied in order. Copy on write: only the objects and
        lists on the way to a masked place are copied; the rest (everything, when no rule
        matches) is shared with ``value``, so neither may be modified afterwards."""
        masked = value
        for segments, action in self._compiled:
            masked = _apply(masked, segments, action)
        return masked


def _selected(node: Any, head: str) -> list[Any]:
    """Keys (dict) or indexes (list, highest first) of ``node`` that ``head`` names."""
    if isinstance(node, dict):
        return list(node) if head == _WILDCARD else [head] if head in node else []
    if isinstance(node, list):
        if head == _WILDCARD:
            return list(reversed(range(len(node))))
        if head.isdigit() and int(head) < len(node):
            return [int(head)]
    return []


def _apply(node: Any, segments: tuple[str, ...], action: MaskAction) -> Any:
    """Apply one rule below ``node``; returns ``node`` itself when nothing below it
    matched, else a shallow copy with the matched places replaced."""
    head, rest = segments[0], segments[1:]
    selected = _selected(node, head)
    if not selected:
        return node
    node = copy.copy(node)
    for key in selected:
        if rest:
            node[key] = _apply(node[key], rest, action)
        elif action == "erase":
            del node[key]
        else:
            node[key] = hash_value(node[key])
    return node
