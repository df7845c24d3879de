"""What a request body shows the request-time policy: findings, a hash, a token estimate.

:func:`inspect_body` looks at no more than ``max_bytes`` bytes and never fails: empty,
binary, invalid UTF-8, non-JSON, deeply nested or truncated bodies all give an
:class:`InspectedBody`. Its aim is to read at least what any upstream parser, tokenizer or
model could read in the bytes; where it cannot, it says so (``truncated``,
``uninspectable``) so the caller can keep the request off tiers that must not see personal
data.

Completeness. The body is ``truncated`` when Envoy says it sent only part of it, when it is
longer than ``max_bytes``, when it is shorter than its declared ``content-length``, and when
it fills ``max_bytes`` exactly without a ``content-length`` equal to it: Envoy sends a full
buffer of a body that is still streaming (chunked HTTP/1.1, HTTP/2 without a length) as if
complete, without ``x-envoy-auth-partial-body: true``.

Reading. A leading UTF-8 byte-order mark is dropped (most JSON parsers accept it) and
reported (``bom``). A body that is not strict UTF-8 (``invalid_utf8``) or holds NUL bytes
(``binary``) is ``uninspectable``: it is still scanned as text (decoded with U+FFFD for
invalid sequences). A complete UTF-8 body is parsed as JSON (control characters inside
strings allowed, as lenient parsers do); one that starts like JSON (``{`` or ``[`` after
white space) but does not parse, or is nested deeper than the parser goes, is
``uninspectable`` — a lenient parser (comments, trailing commas, JSON5) could still read it
— and is scanned as text.

The scanned text. Finding spans are code-point offsets into one text, made of these parts
joined by ``"\\n"`` in this order, each passed through
:func:`~.normalize.detection_text` (fullwidth and other-script digits, hidden format
characters, Unicode dashes and spaces read as ASCII):

1. the primary text: for a JSON body every object key, string value (escapes decoded) and
   number literal of 8 integer digits or more (as written, without its sign), in document
   order, each value of a repeated key included (parsers differ on which one they keep),
   joined by ``"\\n"``; otherwise the decoded text;
2. the decoded forms (:func:`~.normalize.decoded_forms`: backslash escapes, percent-encoding,
   HTML character references) of each of those items that holds a marker (``\\``, ``%``,
   ``+``, ``&``), joined by ``"\\n"``;
3. for JSON, joins of the string values (keys and numbers left out), which a model reads
   as one text: all of them joined by ``""``, then (each stripped of surrounding white
   space) by ``" "``; then, when some values are plain labels (only letters and ``_``, such
   as ``user`` or ``text``), the same two without them. Only matches that cross a join
   count, so what one value shows on its own is not counted again; joins no built-in
   pattern can cross (white space beside a ``""`` join, punctuation such as ``.`` or ``?``
   beside a ``" "`` join) are not looked at.

Findings come from the primary text; a kind it does not show is reported from the first
later part that shows it, so the counts of ordinary bodies stay those of the primary text.
Parts 2 and 3 are computed only where they can add something (a marker present, two values
or more); a part not computed is left out of the scanned text. The body's text never leaves
this module: only :attr:`InspectedBody.sha256` (of the inspected bytes) does.

Pure; thread-safe.
"""

from __future__ import annotations

import codecs
import decimal
import hashlib
import itertools
import json
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from tiermesh.agents.authz.detectors import DetectorRegistry, Finding, default_registry
from tiermesh.agents.authz.normalize import decoded_forms, detection_text, hidden_forms
from tiermesh.agents.authz.tokens import CHARS_PER_TOKEN, estimate_tokens

__all__ = ["BodyEncoding", "InspectedBody", "inspect_body"]

BodyEncoding: TypeAlias = Literal["empty", "utf-8", "invalid_utf8", "binary"]
"""``binary``: holds NUL bytes (also scanned, as decoded text); ``invalid_utf8``: not UTF-8."""

NESTED_TOO_DEEP: Final = "JSON nested deeper than the inspector parses"
NOT_JSON: Final = "body looks like JSON but does not parse"
NOT_UTF8: Final = "body is not valid UTF-8"
HOLDS_NUL: Final = "body holds NUL bytes"

_MAX_STRINGS: Final = 1_000_000
_LONG_NUMBER_DIGITS: Final = 8
"""Number literals with fewer integer digits are not scanned: a bare number that short has
none of the shapes detectors look for (cards have 13 digits or more; phone numbers, SSNs
and NINOs need separators, a ``+`` or letters), and token-id arrays are long lists of them."""
_LONG_NUMBER: Final = 10 ** (_LONG_NUMBER_DIGITS - 1)
_DEFAULT_REGISTRY: Final = default_registry()
_MARKERS: Final = ("\\", "%", "+", "&")
_LABEL: Final = re.compile(r"[A-Za-z_]+")
_LEADING: Final = re.compile(r"[\s\ufeff]*")
_ALNUM: Final = string.ascii_letters + string.digits
_GLUE_EDGE: Final = frozenset(_ALNUM + "._%+@()-")
"""Characters that can sit on either side of a join inside a match (any non-space
character of a built-in detector's pattern)."""
_SPACE_LEFT: Final = frozenset(_ALNUM + ")")
_SPACE_RIGHT: Final = frozenset(_ALNUM + "(")


@dataclass(frozen=True, slots=True)
class InspectedBody:
    """The inspection of one body. Holds no body text."""

    received_bytes: int
    """Bytes the inspection got (before cutting at ``max_bytes``)."""
    inspected_bytes: int
    """Bytes actually scanned (at most ``max_bytes``)."""
    truncated: bool
    """Some of the body was not scanned: cut here, sent partially by Envoy, shorter than its
    declared ``content-length``, or filling ``max_bytes`` without a ``content-length`` that
    says it is complete."""
    encoding: BodyEncoding
    json: bool
    """The scanned bytes are one complete JSON document."""
    sha256: str
    """``sha256:<hex>`` of the inspected bytes."""
    findings: tuple[Finding, ...]
    token_estimate: int
    """:func:`~.tokens.estimate_tokens` of the scanned text; for a truncated body at least
    the declared (or received) length over :data:`~.tokens.CHARS_PER_TOKEN`."""
    uninspectable: str | None = None
    """None when the bytes were read the way any upstream could read them; else why not
    (:data:`NOT_UTF8`, :data:`HOLDS_NUL`, :data:`NOT_JSON`, :data:`NESTED_TOO_DEEP`).
    Truncation is reported by :attr:`truncated` only."""
    bom: bool = False
    """The body starts with a UTF-8 byte-order mark (dropped before reading)."""


class _Pairs(dict[str, Any]):
    """A JSON object with a repeated key: the last value (as :func:`json.loads` keeps) and
    every pair in order (``pairs``), since other parsers keep the first."""

    __slots__ = ("pairs",)
    pairs: list[tuple[str, Any]]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) == len(pairs):
        return document
    repeated = _Pairs(document)
    repeated.pairs = pairs
    return repeated


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_object, parse_float=decimal.Decimal, strict=False
)
"""Every pair of every object, number literals kept as written (``int`` or ``Decimal``:
``str`` gives back their digits), control characters in strings accepted."""


def _items(document: Any) -> tuple[list[str], list[int]]:
    """Every key, string and number literal of 8 digits or more (as written, without its
    sign; an integral decimal also as an integer) in document order, and the indexes of the
    string values among them (no keys, no numbers: a list of token ids joined by spaces
    reads as phone numbers); iterative, so no recursion limit."""
    texts: list[str] = []
    values: list[int] = []
    stack: list[tuple[Iterator[Any], bool]] = [(iter((document,)), False)]
    while stack and len(texts) < _MAX_STRINGS:
        entries, pairs = stack[-1]
        for entry in entries:
            if pairs:
                texts.append(entry[0])
            item = entry[1] if pairs else entry
            kind = type(item)
            if kind is str:
                values.append(len(texts))
                texts.append(item)
            elif kind is list:
                stack.append((iter(item), False))
                break
            elif kind is dict:
                stack.append((iter(item.items()), True))
                break
            elif kind is _Pairs:
                stack.append((iter(item.pairs), True))
                break
            elif kind is int:
                if abs(item) >= _LONG_NUMBER:
                    texts.append(str(abs(item)))  # -4111111111111111 reads as its digits too
            elif kind is decimal.Decimal:
                texts.extend(_decimal_literals(item))
        else:
            stack.pop()
    return texts, values


def _decimal_literals(number: decimal.Decimal) -> list[str]:
    """A long decimal as written without its sign, and as an integer when it is one
    (4111111111111111.0 reads as its digits)."""
    if not number.is_finite() or number.adjusted() < _LONG_NUMBER_DIGITS - 1:
        return []
    literals = [str(number.copy_abs())]
    if number == number.to_integral_value() and number.adjusted() < 30:
        literals.append(str(abs(int(number))))
    return literals


def _looks_like_json(text: str) -> bool:
    """The first character after white space (and stray byte-order marks) opens an object
    or an array."""
    start = _LEADING.match(text)
    return start is not None and text[start.end() : start.end() + 1] in ("{", "[")


def _glued(parts: Sequence[str]) -> tuple[str, list[int]]:
    """``"".join(parts)`` and the offsets of the joins a match could cross: both characters
    beside it could be inside one (not white space: :func:`_spaced` covers those)."""
    parts = [part for part in parts if part]
    seams: list[int] = []
    offset = 0
    for left, right in itertools.pairwise(parts):
        offset += len(left)
        if left[-1] in _GLUE_EDGE and right[0] in _GLUE_EDGE:
            seams.append(offset)
    return "".join(parts), seams


def _spaced(parts: Sequence[str]) -> tuple[str, list[int]]:
    """The parts, stripped, joined by one space, and the offsets just after the joins a
    match could cross: a match holds a space only between a letter, digit or ``)`` and a
    letter, digit or ``(``."""
    parts = [stripped for part in parts if (stripped := part.strip())]
    seams: list[int] = []
    offset = 0
    for left, right in itertools.pairwise(parts):
        offset += len(left) + 1
        if left[-1] in _SPACE_LEFT and right[0] in _SPACE_RIGHT:
            seams.append(offset)
    return " ".join(parts), seams


class _Scan:
    """Findings of the scanned text as its parts are added (see the module docstring)."""

    def __init__(self, registry: DetectorRegistry) -> None:
        self.registry = registry
        self.found: dict[str, Finding] = {}
        self.offset = 0

    def add(self, text: str, seams: Sequence[int] | None = None) -> None:
        """Append ``text`` (a part, already through :func:`detection_text`) and take its
        findings of kinds not found yet; with ``seams``, only matches across them."""
        offset = self.offset
        self.offset += len(text) + 1
        # A kind already found keeps its first part's finding: its detector is not run again.
        if seams is None:
            findings = self.registry.detect(text, skip=self.found)
        else:
            findings = self.registry.detect_across(text, seams, skip=self.found)
        for finding in findings:
            spans = tuple((start + offset, end + offset) for start, end in finding.spans)
            self.found[finding.kind] = Finding(finding.kind, finding.count, spans)

    def findings(self) -> tuple[Finding, ...]:
        return tuple(self.found[kind] for kind in self.registry.kinds if kind in self.found)


def _scan(
    registry: DetectorRegistry, texts: list[str], values: list[int] | None
) -> tuple[Finding, ...]:
    """Findings of the scanned text of ``texts`` (and, for JSON, of the joins of the
    string values, at indexes ``values`` of ``texts``)."""
    normal = [detection_text(text) for text in texts]
    primary = "\n".join(normal)
    scan = _Scan(registry)
    scan.add(primary)
    joined = primary if len(texts) == 1 and normal[0] is texts[0] else "\n".join(texts)
    markers = [marker for marker in _MARKERS if marker in joined]
    if markers:
        decoded = [
            detection_text(form)
            for text in texts
            if any(marker in text for marker in markers)
            for form in decoded_forms(text)
        ]
        scan.add("\n".join(decoded))
    if hidden := hidden_forms(joined):
        scan.add("\n".join(detection_text(form) for form in hidden))
    if values is not None and len(values) > 1:
        plain = [normal[index] for index in values]
        unlabelled = [value for value in plain if not _LABEL.fullmatch(value)]
        for parts in (plain, unlabelled) if len(unlabelled) < len(plain) else (plain,):
            for join in (_glued, _spaced):
                text, seams = join(parts)
                scan.add(text, seams)
    return scan.findings()


def _truncated(
    raw: bytes, data: bytes, max_bytes: int, declared_length: int | None, partial: bool
) -> bool:
    if partial or len(raw) > max_bytes:
        return True
    if declared_length is not None and declared_length > len(data):
        return True
    # A full buffer is complete only if the declared length says so.
    return len(raw) >= max_bytes and declared_length != len(data)


def _decode(body: bytes, *, final: bool) -> str | None:
    """``body`` as strict UTF-8 (a character cut at the end of a non-``final`` body left
    out), or None when it is not UTF-8."""
    try:
        if final:
            return body.decode("utf-8")
        return codecs.getincrementaldecoder("utf-8")().decode(body, final=False)
    except UnicodeDecodeError:
        return None


def _parse(text: str) -> tuple[bool, Any, str | None]:
    """``(True, document, None)``, or ``(False, None, why)`` when ``text`` is not one JSON
    document (``why`` is None when it does not look like JSON either)."""
    try:
        return True, _DECODER.decode(text), None
    except RecursionError:
        return False, None, NESTED_TOO_DEEP
    except ValueError:
        return False, None, NOT_JSON if _looks_like_json(text) else None


def inspect_body(
    raw: bytes,
    *,
    max_bytes: int,
    declared_length: int | None = None,
    partial: bool = False,
    registry: DetectorRegistry | None = None,
) -> InspectedBody:
    """Inspect at most ``max_bytes`` of ``raw``; ``partial`` says the sender cut it,
    ``declared_length`` is the request's ``content-length`` (None when it has none)."""
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    data = raw[:max_bytes]
    truncated = _truncated(raw, data, max_bytes, declared_length, partial)
    bom = data.startswith(codecs.BOM_UTF8)
    body = data[len(codecs.BOM_UTF8) :] if bom else data
    decoded = _decode(body, final=not truncated)
    encoding: BodyEncoding = "utf-8"
    uninspectable: str | None = None
    if decoded is None:
        decoded = body.decode("utf-8", errors="replace")
        encoding, uninspectable = "invalid_utf8", NOT_UTF8
    if not data:
        encoding = "empty"
    elif b"\x00" in data:
        encoding, uninspectable = "binary", HOLDS_NUL
    document: Any = None
    is_json = False
    if encoding == "utf-8" and not truncated:
        is_json, document, uninspectable = _parse(decoded)
    detectors = registry or _DEFAULT_REGISTRY
    if is_json:
        texts, values = _items(document)
        findings = _scan(detectors, texts, values)
    else:
        findings = _scan(detectors, [decoded], None)
    tokens = estimate_tokens(document, decoded)
    if truncated:  # the unseen rest counts too, at the same rate as plain text
        tokens = max(tokens, -(-max(declared_length or 0, len(raw)) // CHARS_PER_TOKEN))
    return InspectedBody(
        received_bytes=len(raw),
        inspected_bytes=len(data),
        truncated=truncated,
        encoding=encoding,
        json=is_json,
        sha256="sha256:" + hashlib.sha256(data).hexdigest(),
        findings=findings,
        token_estimate=tokens,
        uninspectable=uninspectable,
        bom=bom,
    )
