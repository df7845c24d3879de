"""What a request body shows the request-time policy: findings, a hash, a token estimate.

:func:`inspect_body` looks at no more than ``max_bytes`` bytes and never fails: empty,
binary, invalid UTF-8, non-JSON, deeply nested or truncated bodies all give an
:class:`InspectedBody`. The text it scans is

- for a complete UTF-8 JSON body: every string in it (object keys and values, escapes
  decoded), joined by ``"\\n"`` in document order — so ``\\u0040`` cannot hide an ``@``;
- otherwise: the bytes decoded as UTF-8 with invalid sequences replaced by U+FFFD.

Finding spans are code-point offsets into that scanned text. The body's text never leaves
this module: only :attr:`InspectedBody.sha256` (of the inspected bytes) does.
Pure; thread-safe.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from tiermesh.agents.authz.detectors import DetectorRegistry, Finding, default_registry
from tiermesh.agents.authz.tokens import CHARS_PER_TOKEN, estimate_tokens

__all__ = ["BodyEncoding", "InspectedBody", "inspect_body"]

BodyEncoding: TypeAlias = Literal["empty", "utf-8", "invalid_utf8", "binary"]
"""``binary``: holds NUL bytes (also scanned, as decoded text); ``invalid_utf8``: not UTF-8."""

_MAX_STRINGS: Final = 1_000_000
_DEFAULT_REGISTRY: Final = default_registry()


@dataclass(frozen=True, slots=True)
class InspectedBody:
    """The inspection of one body. Holds no body text."""

    received_bytes: int
    """Bytes the inspection got (before cutting at ``max_bytes``)."""
    inspected_bytes: int
    """Bytes actually scanned (at most ``max_bytes``)."""
    truncated: bool
    """Some of the body was not scanned: cut here, sent partially by Envoy, or shorter than
    its declared ``content-length``."""
    encoding: BodyEncoding
    json: bool
    """The scanned bytes are one complete JSON document."""
    sha256: str
    """``sha256:<hex>`` of the inspected bytes."""
    findings: tuple[Finding, ...]
    token_estimate: int
    """:func:`~.tokens.estimate_tokens` of the scanned text; for a truncated body at least
    the declared (or received) length over :data:`~.tokens.CHARS_PER_TOKEN`."""


def _strings(document: Any) -> list[str]:
    """Every key and string value, iteratively (no recursion limit), in document order."""
    found: list[str] = []
    stack: list[Any] = [document]
    while stack and len(found) < _MAX_STRINGS:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            for key, value in reversed(list(item.items())):
                stack.extend((value, key))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


def inspect_body(
    raw: bytes,
    *,
    max_bytes: int,
    declared_length: int | None = None,
    partial: bool = False,
    registry: DetectorRegistry | None = None,
) -> InspectedBody:
    """Inspect at most ``max_bytes`` of ``raw``; ``partial`` says the sender cut it."""
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    data = raw[:max_bytes]
    truncated = (
        partial
        or len(raw) > max_bytes
        or (declared_length is not None and declared_length > len(data))
    )
    encoding: BodyEncoding
    try:
        text = data.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        encoding = "invalid_utf8"
    if not data:
        encoding = "empty"
    elif b"\x00" in data:
        encoding = "binary"
    document: Any = None
    is_json = False
    scanned = text
    if encoding == "utf-8" and not truncated:
        try:
            document = json.loads(text)
            is_json = True
        except (ValueError, RecursionError):
            document = None
        if is_json:
            scanned = "\n".join(_strings(document))
    findings = (registry or _DEFAULT_REGISTRY).detect(scanned)
    tokens = estimate_tokens(document, text)
    if truncated:  # the unseen rest counts too, at the same rate as plain text
        tokens = max(tokens, -(-max(declared_length or 0, len(raw)) // CHARS_PER_TOKEN))
    return InspectedBody(
        received_bytes=len(raw),
        inspected_bytes=len(data),
        truncated=truncated,
        encoding=encoding,
        json=is_json,
        sha256="sha256:" + hashlib.sha256(data).hexdigest(),
        findings=tuple(findings),
        token_estimate=tokens,
    )
