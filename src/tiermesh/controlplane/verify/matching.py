"""Could a route's header matchers accept a given header value (or its absence)?

Answers over-approximate: a matcher the verifier cannot evaluate exactly (regex errors,
unknown kinds, inverted matches on a missing header) counts as "may match", so a route
is never wrongly judged unreachable by restricted traffic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import string_pb2

__all__ = ["exact_value", "may_match"]


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
