"""Pluggable PII detectors: find personal data in request text, report where, never what.

A :class:`Detector` has a ``kind`` and a ``find(text)`` that yields ``(start, end)``
code-point offsets of each match in ``text``. :func:`detect` runs a set of detectors and
returns one :class:`Finding` per kind that matched: kind, count and spans. A finding never
holds the matched text, so it may be logged and recorded.

Built-in detectors (:data:`DEFAULT_DETECTORS`, in this order):

- ``email`` — ``local@domain.tld`` with a dotted domain and a 2-24 letter TLD.
- ``phone`` — E.164 / international (``+`` and 8-15 digits, separators allowed) and the
  common national shapes: North American ``(212) 555-0123`` / ``212-555-0123`` /
  ``212.555.0123`` (area and exchange codes 2-9 first), and trunk-prefixed ``0`` numbers
  of 10-11 digits written in groups (``020 7946 0958``, ``06 12 34 56 78``). A bare run of
  digits is not a phone number (too many false positives: ids, amounts, timestamps).
- ``iban`` — two letters, two check digits, the BBAN; length checked against the country
  table (:data:`IBAN_LENGTHS`) and the ISO 7064 mod-97 check; spaces every four allowed.
- ``payment_card`` — 13-19 digits, optionally in groups separated by one space or dash,
  passing the Luhn check, with a known issuer prefix (Visa 4, Mastercard 51-55/2221-2720,
  Amex 34/37, Discover 6011/65/644-649, JCB 3528-3589, Diners 36/38/300-305, UnionPay 62,
  Maestro 50/56-58/67).
- ``us_ssn`` — ``AAA-GG-SSSS`` (dashes or spaces required, so 9-digit ids do not match),
  excluding area 000, 666 and 900-999, group 00 and serial 0000.
- ``uk_nino`` — UK National Insurance number: two prefix letters (not D, F, I, Q, U, V;
  second not O; not BG, GB, KN, NK, NT, TN, ZZ), six digits, suffix A-D; spaces allowed,
  any letter case.

Not covered (documented gaps): other countries' national ids, passport and driving-licence
numbers, postal addresses, names, dates of birth, IP addresses, credentials.

Every detector is a pure function of its text: thread-safe and reentrant. Patterns are
linear-time in the text length (no nested quantifiers over the same characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_DETECTORS",
    "IBAN_LENGTHS",
    "Detector",
    "DetectorRegistry",
    "EmailDetector",
    "Finding",
    "IbanDetector",
    "PaymentCardDetector",
    "PhoneDetector",
    "Span",
    "UkNinoDetector",
    "UsSsnDetector",
    "default_registry",
    "detect",
    "iban_valid",
    "luhn_valid",
]

Span = tuple[int, int]
"""``(start, end)`` code-point offsets of a match, ``end`` exclusive."""


@runtime_checkable
class Detector(Protocol):
    """Finds one kind of personal data. ``find`` must be pure and must not raise on any
    ``str`` (including lone surrogates or U+FFFD replacement characters)."""

    @property
    def kind(self) -> str:
        """Name of what is found (``email``); ``[a-z0-9_]+``, unique in a registry."""
        ...

    def find(self, text: str) -> Iterator[Span]:
        """Spans of every match in ``text``, in order, not overlapping."""
        ...


@dataclass(frozen=True, slots=True)
class Finding:
    """Matches of one kind: how many and where. Never the matched text."""

    kind: str
    count: int
    spans: tuple[Span, ...]

    def to_json(self) -> dict[str, object]:
        """``{"kind", "count", "spans": [[start, end], …]}``."""
        return {"kind": self.kind, "count": self.count, "spans": [list(s) for s in self.spans]}


def _bounded(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``pattern`` (ASCII classes) not glued to a neighbouring letter, digit or joiner."""
    return re.compile(rf"(?<![\w@+.-]){pattern}(?![\w@-]|\.\w)", flags | re.ASCII)


class EmailDetector:
    """``email``: addresses with a dotted domain and an alphabetic TLD."""

    kind: Final = "email"
    _pattern: Final = re.compile(
        r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])",
        re.ASCII,
    )

    def find(self, text: str) -> Iterator[Span]:
        for match in self._pattern.finditer(text):
            yield match.span()


class PhoneDetector:
    """``phone``: international (``+`` 8-15 digits) and common national formats."""

    kind: Final = "phone"
    _international: Final = _bounded(r"\+[1-9]\d{0,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}")
    _north_american: Final = _bounded(r"(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[-. ])[2-9]\d{2}[-. ]\d{4}")
    _trunk: Final = _bounded(r"0\d{1,4}(?:[ -]\d{2,4}){2,4}")

    def find(self, text: str) -> Iterator[Span]:
        spans: list[Span] = []
        for match in self._international.finditer(text):
            if 8 <= _digit_count(match.group()) <= 15:
                spans.append(match.span())
        for match in self._north_american.finditer(text):
            spans.append(match.span())
        for match in self._trunk.finditer(text):
            if 10 <= _digit_count(match.group()) <= 11:
                spans.append(match.span())
        yield from _disjoint(spans)


IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
"""IBAN length by ISO 3166 country code (the SWIFT IBAN registry)."""


def iban_valid(candidate: str) -> bool:
    """True when ``candidate`` (spaces ignored) has its country's length and mod 97 == 1."""
    compact = candidate.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rotated = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rotated)) % 97 == 1


class IbanDetector:
    """``iban``: country length table and the mod-97 check."""

    kind: Final = "iban"
    _pattern: Final = _bounded(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?")

    def find(self, text: str) -> Iterator[Span]:
        for match in self._pattern.finditer(text):
            if iban_valid(match.group()):
                yield match.span()


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


_CARD_PREFIX: Final = re.compile(
    r"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|6011|65|64[4-9]"
    r"|35(?:2[89]|[3-8]\d)|3[068]|30[0-5]|62|5[06-8]|67",
    re.ASCII,
)


class PaymentCardDetector:
    """``payment_card``: 13-19 digits (groups split by one space or dash), issuer prefix
    and Luhn check."""

    kind: Final = "payment_card"
    _pattern: Final = _bounded(r"\d{4}(?:[ -]?\d{2,6}){2,4}(?:[ -]?\d{1,4})?")

    def find(self, text: str) -> Iterator[Span]:
        for match in self._pattern.finditer(text):
            raw = match.group()
            if " " in raw and "-" in raw:
                continue
            digits = raw.replace(" ", "").replace("-", "")
            if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_valid(digits):
                yield match.span()


class UsSsnDetector:
    """``us_ssn``: ``AAA-GG-SSSS`` with separators, invalid ranges excluded."""

    kind: Final = "us_ssn"
    _pattern: Final = _bounded(
        r"(?!000|666|9\d\d)\d{3}(?P<sep>[- ])(?!00)\d{2}(?P=sep)(?!0000)\d{4}"
    )

    def find(self, text: str) -> Iterator[Span]:
        for match in self._pattern.finditer(text):
            yield match.span()


class UkNinoDetector:
    """``uk_nino``: UK National Insurance numbers (``QQ 12 34 56 C`` shapes)."""

    kind: Final = "uk_nino"
    _pattern: Final = _bounded(
        r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
        r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]",
        re.IGNORECASE,
    )

    def find(self, text: str) -> Iterator[Span]:
        for match in self._pattern.finditer(text):
            yield match.span()


def _digit_count(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _disjoint(spans: Iterable[Span]) -> Iterator[Span]:
    """Sorted spans, dropping any that overlap an earlier (longer-first at a start) one."""
    end = -1
    for start, stop in sorted(spans, key=lambda s: (s[0], -s[1])):
        if start >= end:
            yield start, stop
            end = stop


class DetectorRegistry:
    """An ordered set of detectors by kind. Immutable once built; thread-safe."""

    def __init__(self, detectors: Iterable[Detector] = ()) -> None:
        found: dict[str, Detector] = {}
        for detector in detectors:
            if not re.fullmatch(r"[a-z0-9_]+", detector.kind):
                raise ValueError(f"detector kind {detector.kind!r} must match [a-z0-9_]+")
            if detector.kind in found:
                raise ValueError(f"two detectors of kind {detector.kind!r}")
            found[detector.kind] = detector
        self._detectors = tuple(found.values())

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(d.kind for d in self._detectors)

    def with_detector(self, detector: Detector) -> DetectorRegistry:
        """A new registry with ``detector`` added (``ValueError`` if its kind is taken)."""
        return DetectorRegistry((*self._detectors, detector))

    def without(self, kind: str) -> DetectorRegistry:
        """A new registry without the detector of ``kind`` (no error when absent)."""
        return DetectorRegistry(d for d in self._detectors if d.kind != kind)

    def detect(self, text: str) -> list[Finding]:
        """One :class:`Finding` per kind with at least one match, in registry order."""
        findings: list[Finding] = []
        for detector in self._detectors:
            spans = tuple(detector.find(text))
            if spans:
                findings.append(Finding(detector.kind, len(spans), spans))
        return findings


DEFAULT_DETECTORS: Final[Sequence[Detector]] = (
    EmailDetector(),
    PhoneDetector(),
    IbanDetector(),
    PaymentCardDetector(),
    UsSsnDetector(),
    UkNinoDetector(),
)
"""The built-in detectors, in the order their findings are reported."""


def default_registry() -> DetectorRegistry:
    """A registry of :data:`DEFAULT_DETECTORS`."""
    return DetectorRegistry(DEFAULT_DETECTORS)


def detect(text: str, registry: DetectorRegistry | None = None) -> list[Finding]:
    """Findings of ``registry`` (default: :func:`default_registry`) in ``text``."""
    return (registry or _DEFAULT).detect(text)


_DEFAULT: Final = default_registry()
