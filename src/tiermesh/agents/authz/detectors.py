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
- ``payment_card`` — 13-19 digits, optionally in groups separated by one space, dash, dot
  or slash (one kind throughout), passing the Luhn check, with a known issuer prefix
  (Visa 4, Mastercard 51-55/2221-2720, Amex 34/37, Discover 6011/65/644-649, JCB
  3528-3589, Diners 36/38/300-305, UnionPay 62, Maestro 50/56-58/67).
- ``us_ssn`` — ``AAA-GG-SSSS`` (dashes or spaces required, so 9-digit ids do not match),
  excluding area 000, 666 and 900-999, group 00 and serial 0000.
- ``uk_nino`` — UK National Insurance number: two prefix letters (not D, F, I, Q, U, V;
  second not O; not BG, GB, KN, NK, NT, TN, ZZ), six digits, suffix A-D; spaces allowed,
  any letter case.

Not covered (documented gaps): other countries' national ids, passport and driving-licence
numbers, postal addresses, names, dates of birth, IP addresses, credentials.

Every detector is a pure function of its text: thread-safe and reentrant. Patterns are
linear-time in the text length (no nested quantifiers over the same characters).

Speed (this runs on every request): every match of a digit-based detector holds two
adjacent ASCII digits and every email an ``@``, so the built-in detectors run their
patterns only over windows of the text around those (found with a byte translation and a
literal search, far cheaper than a pattern tried at every position), and each pattern
starts with the character class of its first character so that the regex engine skips
ahead without trying the look-behind everywhere. Windows reach further than any match and
its look-around can, so the spans are exactly those of the plain patterns over the whole
text (``tests/unit/authz/test_detectors.py`` checks this against reference patterns).
"""

from __future__ import annotations

import bisect
import itertools
import re
import string
import threading
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
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


_BEFORE: Final = r"[\w@+.-]"
"""What may not precede a match (a letter, digit or joiner would glue it to a longer token)."""
_AFTER: Final = r"(?![\w@-]|\.\w)"
"""What may not follow a match."""


def _bounded(first: str, rest: str) -> re.Pattern[str]:
    """``first`` (one character class) then ``rest`` (ASCII classes), not glued to a
    neighbouring letter, digit or joiner.

    The same as ``(?<![\\w@+.-]){first}{rest}(?![\\w@-]|\\.\\w)``, written with the
    look-behind after the first character (``(?<!B{first})``: the character before the match
    is not in B): a pattern that starts with a character class lets the engine skip to the
    next candidate character instead of trying the look-behind at every position.
    """
    return re.compile(rf"{first}(?<!{_BEFORE}{first}){rest}{_AFTER}", re.ASCII)


_DIGIT_MARKS: Final = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
"""Byte translation: ASCII digits to ``1``, everything else to ``0``."""
_DIGIT_REACH: Final = 50
"""How far a digit-based match and its look-around reach beyond two adjacent digits it
holds (the longest, an international phone number, is 47 characters, plus 2 of
look-ahead and 1 of look-behind)."""
_EMAIL_BEFORE: Final = 66
"""How far an email and its look-behind reach before its ``@`` (64 + 1 + 1)."""
_EMAIL_AFTER: Final = 540
"""How far an email and its look-ahead reach after its ``@`` (8 labels of 64 and a
24-letter TLD, + 1 of look-ahead, rounded up)."""
_MERGE_GAP: Final = 256
"""Windows closer than this are scanned as one (fewer, larger scans)."""
_DENSE_SEAMS: Final = 32
"""With a seam every this many characters or closer, matches across seams are looked for
by scanning the whole text once rather than near each seam."""
_DIGIT_CLUSTERS: Final = re.compile(rb"11(?:[01]{0,%d}11)*" % _MERGE_GAP)
"""Runs of marked digits whose pairs are at most :data:`_MERGE_GAP` apart."""
_AT_CLUSTERS: Final = re.compile(f"@(?:[^@]{{0,{_MERGE_GAP + _EMAIL_BEFORE + _EMAIL_AFTER}}}@)*")
"""``@`` signs whose email windows would overlap or nearly touch."""


class _WindowMemo(threading.local):
    """The last text's digit windows, per thread: the five digit-based detectors of one
    :meth:`DetectorRegistry.detect` call share them."""

    text: str | None = None
    windows: tuple[Span, ...] = ()


_MEMO: Final = _WindowMemo()


def _digit_windows(text: str) -> tuple[Span, ...]:
    """Windows of ``text`` that hold every match of a digit-based detector, with the
    context its look-around reads (see the module docstring)."""
    memo = _MEMO
    if memo.text is text:
        return memo.windows
    marks = text.encode("ascii", "replace").translate(_DIGIT_MARKS)
    size = len(text)
    windows = tuple(
        (max(0, match.start() - _DIGIT_REACH), min(size, match.end() + _DIGIT_REACH))
        for match in _DIGIT_CLUSTERS.finditer(marks)
    )
    memo.text, memo.windows = text, windows
    return windows


def _at_windows(text: str) -> tuple[Span, ...]:
    """Windows of ``text`` that hold every email, with the context its look-around reads."""
    if "@" not in text:
        return ()
    size = len(text)
    return tuple(
        (max(0, match.start() - _EMAIL_BEFORE), min(size, match.end() + _EMAIL_AFTER))
        for match in _AT_CLUSTERS.finditer(text)
    )


def _crosses(span: Span, seams: Sequence[int]) -> bool:
    """``start < seam < end`` for one of ``seams`` (sorted)."""
    index = bisect.bisect_right(seams, span[0])
    return index < len(seams) and seams[index] < span[1]


def _near(windows: Iterable[Span], seams: Sequence[int], reach: int | None) -> Iterator[Span]:
    """The parts of ``windows`` within ``reach`` of a seam (whole windows that hold a seam
    when ``reach`` is None), merged when closer than :data:`_MERGE_GAP` (dense seams make
    one scan, not one per seam)."""
    current: Span | None = None
    for start, end in windows:
        low, high = bisect.bisect_left(seams, start), bisect.bisect_right(seams, end)
        for seam in seams[low:high]:
            if reach is None:
                part = (start, end)
            else:
                part = (max(start, seam - reach), min(end, seam + reach))
            if current is not None and part[0] <= current[1] + _MERGE_GAP:
                current = (current[0], max(current[1], part[1]))
                continue
            if current is not None:
                yield current
            current = part
    if current is not None:
        yield current


class _Windowed:
    """A built-in detector that scans only windows of the text: around two adjacent digits
    (and within ``_reach`` of a seam), or around an ``@`` (``_reach`` None)."""

    _reach: int | None = _DIGIT_REACH
    _inside: frozenset[str] = frozenset()
    """Every character a match can hold: a seam with another on either side is not crossed."""

    def _windows(self, text: str) -> tuple[Span, ...]:
        return _digit_windows(text)

    def _spans(self, text: str, windows: Iterable[Span]) -> Iterator[Span]:
        raise NotImplementedError

    def find(self, text: str) -> Iterator[Span]:
        return self._spans(text, self._windows(text))

    def crosses(self, pair: str) -> bool:
        """Whether a match could hold ``pair`` (two characters) across a seam."""
        return pair[0] in self._inside and pair[1:] in self._inside

    def find_across(
        self, text: str, seams: Sequence[int], beside: Mapping[str, Sequence[int]]
    ) -> Iterator[Span]:
        """Spans of the matches that cross one of ``seams`` (sorted offsets), scanning only
        near the seams a match could cross (``beside``: the seams by the two characters
        around them); see :meth:`DetectorRegistry.detect_across`."""
        near = [seam for pair, group in beside.items() if self.crosses(pair) for seam in group]
        if not near:
            return iter(())
        windows: Iterable[Span]
        if len(near) * _DENSE_SEAMS > len(text):  # one scan costs less than one per seam
            windows = self._windows(text)
        else:
            near.sort()
            windows = _near(self._windows(text), near, self._reach)
        return (span for span in self._spans(text, windows) if _crosses(span, seams))


def _scan(pattern: re.Pattern[str], text: str, windows: Iterable[Span]) -> Iterator[re.Match[str]]:
    for start, end in windows:
        yield from pattern.finditer(text, start, end)


class EmailDetector(_Windowed):
    """``email``: addresses with a dotted domain and an alphabetic TLD."""

    kind: Final = "email"
    _reach = None
    _inside = frozenset(string.ascii_letters + string.digits + "._%+-@")
    _pattern: Final = re.compile(
        r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])",
        re.ASCII,
    )

    def _windows(self, text: str) -> tuple[Span, ...]:
        return _at_windows(text)

    def _spans(self, text: str, windows: Iterable[Span]) -> Iterator[Span]:
        for match in _scan(self._pattern, text, windows):
            yield match.span()


class PhoneDetector(_Windowed):
    """``phone``: international (``+`` 8-15 digits) and common national formats."""

    kind: Final = "phone"
    _inside = frozenset(string.digits + " .-()+")
    _international: Final = _bounded(r"\+", r"[1-9]\d{0,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}")
    # (?:\([2-9]\d{2}\) ?|[2-9]\d{2}[-. ]) with its first character taken out in front.
    _north_american: Final = _bounded(
        r"[(2-9]", r"(?:(?<=\()[2-9]\d{2}\) ?|(?<=[2-9])\d{2}[-. ])[2-9]\d{2}[-. ]\d{4}"
    )
    _trunk: Final = _bounded("0", r"\d{1,4}(?:[ -]\d{2,4}){2,4}")

    def _spans(self, text: str, windows: Iterable[Span]) -> Iterator[Span]:
        windows = tuple(windows)
        spans: list[Span] = []
        for match in _scan(self._international, text, windows):
            if 8 <= _digit_count(match.group()) <= 15:
                spans.append(match.span())
        for match in _scan(self._north_american, text, windows):
            spans.append(match.span())
        for match in _scan(self._trunk, text, windows):
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


class IbanDetector(_Windowed):
    """``iban``: country length table and the mod-97 check."""

    kind: Final = "iban"
    _inside = frozenset(string.ascii_uppercase + string.digits + " ")
    _pattern: Final = _bounded("[A-Z]", r"[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?")

    def _spans(self, text: str, windows: Iterable[Span]) -> Iterator[Span]:
        for match in _scan(self._pattern, text, windows):
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


_DIGITS: Final = frozenset(string.digits)
_NO_SEPARATORS: Final = str.maketrans("", "", " -./")


class PaymentCardDetector(_Windowed):
    """``payment_card``: 13-19 digits (groups split by one space, dash, dot or slash, the
    same one throughout), issuer prefix and Luhn check."""

    kind: Final = "payment_card"
    _inside = frozenset(string.digits + " -./")
    _pattern: Final = _bounded(r"\d", r"\d{3}(?:[ ./-]?\d{2,6}){2,4}(?:[ ./-]?\d{1,4})?")

    def _spans(self, text: str, windows: Iterable[Span]) -> Iterator[Span]:
        for match in _scan(self._pattern, text, windows):
            raw = match.group()
            separators = set(raw) - _DIGITS
            if len(separators) > 1:
                continue
            digits = raw.translate(_NO_SEPARATORS)
            if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_valid(digits):
                yield match.span()


class UsSsnDetector(_Windowed):
    """``us_ssn``: ``AAA-GG-SSSS`` with separators, invalid ranges excluded."""

    kind: Final = "us_ssn"
    _inside = frozenset(string.digits + " -")
    # (?!000|666|9\d\d)\d{3}… with its first digit taken out in front.
    _pattern: Final = _bounded(
        r"\d", r"(?!(?<=0)00|(?<=6)66|(?<=9)\d\d)\d{2}(?P<sep>[- ])(?!00)\d{2}(?P=sep)(?!0000)\d{4}"
    )

    def _spans(self, text: str, windows: Iterable[Span]) -> Iterator[Span]:
        for match in _scan(self._pattern, text, windows):
            yield match.span()


class UkNinoDetector(_Windowed):
    """``uk_nino``: UK National Insurance numbers (``QQ 12 34 56 C`` shapes)."""

    kind: Final = "uk_nino"
    _inside = frozenset(string.ascii_letters + string.digits + " ")

    def crosses(self, pair: str) -> bool:
        # Inside a NINO a letter follows a digit or a space only as the A-D suffix.
        if len(pair) < 2 or pair[0] not in self._inside or pair[1] not in self._inside:
            return False
        return not (pair[1].isalpha() and not pair[0].isalpha() and pair[1] not in "ABCDabcd")

    # (?<![\w@+.-])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2}
    # ?\d{2} ?[A-D], any case, written to start at the first digit (with the letters, and
    # the space after them, if any, in a look-behind; a digit after a digit is dropped
    # first, cheaply): a pattern that starts with a letter is tried at almost every
    # position of prose. Two matches cannot overlap, so the spans are the same.
    _prefix: Final = rf"(?<!{_BEFORE})(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    _pattern: Final = re.compile(
        rf"\d(?<=[A-Z ]\d)(?:(?<={_prefix}\d)|(?<={_prefix} \d))"
        rf"\d ?\d{{2}} ?\d{{2}} ?[A-D]{_AFTER}",
        re.ASCII | re.IGNORECASE,
    )

    def _spans(self, text: str, windows: Iterable[Span]) -> Iterator[Span]:
        for match in _scan(self._pattern, text, windows):
            start, end = match.span()
            yield (start - 3 if text[start - 1] == " " else start - 2), end


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

    def detect(self, text: str, *, skip: Container[str] = ()) -> list[Finding]:
        """One :class:`Finding` per kind with at least one match, in registry order; the
        detectors of the kinds in ``skip`` are not run."""
        findings: list[Finding] = []
        for detector in self._detectors:
            if detector.kind in skip:
                continue
            spans = tuple(detector.find(text))
            if spans:
                findings.append(Finding(detector.kind, len(spans), spans))
        return findings

    def detect_each(self, texts: Sequence[str]) -> list[list[Finding]]:
        """:meth:`detect` of each of ``texts``, spans relative to that text.

        With only built-in detectors, in one pass over the texts joined by ``"\\n"``: no
        built-in pattern holds a line break or reads one as a letter, digit or joiner, so
        a match never spans two texts and a text's edge reads as a line break does."""
        if not all(isinstance(d, _Windowed) for d in self._detectors) or len(texts) < 2:
            return [self.detect(text) for text in texts]
        starts = list(itertools.accumulate((len(text) + 1 for text in texts[:-1]), initial=0))
        counts: list[dict[str, list[Span]]] = [{} for _ in texts]
        for finding in self.detect("\n".join(texts)):
            for start, end in finding.spans:
                index = bisect.bisect_right(starts, start) - 1
                offset = starts[index]
                counts[index].setdefault(finding.kind, []).append((start - offset, end - offset))
        return [
            [Finding(kind, len(spans), tuple(spans)) for kind, spans in found.items()]
            for found in counts
        ]

    def detect_across(
        self, text: str, seams: Sequence[int], *, skip: Container[str] = ()
    ) -> list[Finding]:
        """Like :meth:`detect`, keeping only matches that cross a seam (``start < seam <
        end`` for one of ``seams``, sorted offsets into ``text``): for a text made by
        joining parts, what no part shows on its own. Built-in detectors scan only near the
        seams; others scan the whole text. The kinds in ``skip`` are not looked for."""
        findings: list[Finding] = []
        if not seams:
            return findings
        beside: dict[str, list[int]] = {}
        for seam in seams:
            beside.setdefault(text[seam - 1 : seam + 1], []).append(seam)
        for detector in self._detectors:
            if detector.kind in skip:
                continue
            if isinstance(detector, _Windowed):
                spans = tuple(detector.find_across(text, seams, beside))
            else:
                spans = tuple(s for s in detector.find(text) if _crosses(s, seams))
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
