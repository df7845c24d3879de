"""Could a route's header matchers accept a given header value (or its absence)?

Answers over-approximate: a matcher the verifier cannot evaluate exactly (regex errors,
unknown kinds, inverted matches on a missing header) counts as "may match", so a route
is never wrongly judged unreachable by restricted traffic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import string_pb2

__all__ = ["HeaderFacts", "exact_value", "may_match"]


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "exact": str.__eq__,
    "prefix": str.startswith,
    "suffix": str.endswith,
    "contains": str.__contains__,
}


def _string_may_match(matcher: string_pb2.StringMatcher, value: str) -> bool:
    kind = matcher.WhichOneof("match_pattern")
    if kind in _COMPARE:
        pattern = str(getattr(matcher, kind))
        if matcher.ignore_case:
            value, pattern = value.lower(), pattern.lower()
        return bool(_COMPARE[kind](value, pattern))
    if kind == "safe_regex":
        try:
            return re.fullmatch(str(matcher.safe_regex.regex), value) is not None
        except re.error:
            return True
    return True


def _one_may_match(matcher: rc.HeaderMatcher, value: str | None) -> bool:
    kind = matcher.WhichOneof("header_match_specifier")
    if kind == "present_match":
        if matcher.invert_match:
            return True
        return (value is not None) == bool(matcher.present_match)
    if value is None:
        if matcher.invert_match:
            return True
        if not matcher.treat_missing_header_as_empty:
            return False
        value = ""
    if kind == "string_match":
        result = _string_may_match(matcher.string_match, value)
    elif kind == "exact_match":
        result = value == matcher.exact_match
    elif kind == "prefix_match":
        result = value.startswith(matcher.prefix_match)
    elif kind == "suffix_match":
        result = value.endswith(matcher.suffix_match)
    elif kind == "contains_match":
        result = matcher.contains_match in value
    else:
        return True
    return result != bool(matcher.invert_match)


def may_match(headers: Sequence[rc.HeaderMatcher], name: str, value: str | None) -> bool:
    """True unless some matcher on header ``name`` surely rejects ``value`` (None: absent)."""
    return all(
        _one_may_match(matcher, value) for matcher in headers if matcher.name.lower() == name
    )


def exact_value(headers: Sequence[rc.HeaderMatcher], name: str) -> str | None:
    """The value a non-inverted exact matcher pins header ``name`` to, if any."""
    for matcher in headers:
        if matcher.name.lower() != name or matcher.invert_match:
            continue
        if matcher.WhichOneof("header_match_specifier") == "string_match":
            string = matcher.string_match
            if string.WhichOneof("match_pattern") == "exact" and not string.ignore_case:
                return str(string.exact)
        if matcher.WhichOneof("header_match_specifier") == "exact_match":
            return str(matcher.exact_match)
    return None


class HeaderFacts:
    """:func:`may_match` on one header for a few values and :func:`exact_value` on
    another, for the matchers of many routes: each distinct matcher (by its serialized
    bytes: equal bytes, equal matcher) is judged once. A big table repeats a few
    sensitivity, task and model matchers in every tenant's routes.

    Not thread-safe: one instance per verification.
    """

    __slots__ = ("_all", "_memo", "_name", "_pinned", "_values")

    def __init__(self, name: str, values: Sequence[str | None], pinned: str) -> None:
        self._name = name
        self._values = tuple(values)
        self._pinned = pinned
        self._all = (True,) * len(self._values)
        # matcher bytes -> (what it allows of values, or None for another header; the
        # value it pins header ``pinned`` to, or None)
        self._memo: dict[bytes, tuple[tuple[bool, ...] | None, str | None]] = {}

    def _judge(self, matcher: rc.HeaderMatcher) -> tuple[tuple[bool, ...] | None, str | None]:
        allows = None
        if matcher.name.lower() == self._name:
            allows = tuple(_one_may_match(matcher, value) for value in self._values)
        return allows, exact_value([matcher], self._pinned)

    def of(self, headers: Iterable[rc.HeaderMatcher]) -> tuple[tuple[bool, ...], str | None]:
        """``(tuple(may_match(headers, name, v) for v in values), exact_value(headers,
        pinned))``."""
        allowed = self._all
        pinned: str | None = None
        memo = self._memo
        for matcher in headers:
            key = matcher.SerializeToString()
            facts = memo.get(key)
            if facts is None:
                facts = memo[key] = self._judge(matcher)
            allows, value = facts
            if allows is not None:
                allowed = (
                    allows if allowed is self._all else tuple(map(bool.__and__, allowed, allows))
                )
            if pinned is None:
                pinned = value
        return allowed, pinned
