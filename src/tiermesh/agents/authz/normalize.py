"""The text detectors scan: what a reader (an upstream parser, a tokenizer, a model) would
read, spelled in the ASCII the detectors match.

:func:`detection_text` maps a text to the characters a model reads in it:

- NFKC (compatibility) normalization: fullwidth digits and at sign (U+FF14, U+FF20),
  circled and superscript digits, ligatures become their ASCII spellings;
- every Unicode decimal digit (category Nd: Arabic-Indic, Devanagari, …) becomes its ASCII
  digit;
- format characters (Cf: zero-width space and joiners, soft hyphen, U+FEFF, bidi controls)
  and combining marks (Mn, Me) are removed, so they cannot split an address or a number;
- dashes (Pd) and minus signs (U+2212, U+02D7, U+2796) become ``-``; space separators (Zs)
  become a space; line and paragraph separators (Zl, Zp) become ``\\n``.

An ASCII text is returned unchanged (the common case costs one ``isascii`` check). The
code-point table is built on the first non-ASCII text, or at start by :func:`warm` (tens of
milliseconds, once per process), and cached. Offsets into the result are not offsets into
the input: the result is itself the text findings point into.

:func:`decoded_forms` gives the forms an escape-decoding reader would see (backslash
escapes, percent-encoding, HTML character references), computed only when the marker
character is present. :func:`hidden_forms` gives what a model reads through two common
ways of hiding text from pattern matching: base64 runs (decoded when they decode to text)
and bracketed ``[at]`` / ``(dot)`` spellings of an address.

Pure; thread-safe.
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import re
import sys
import unicodedata
from typing import Final
from urllib.parse import unquote, unquote_plus

__all__ = ["decoded_forms", "detection_text", "hidden_forms", "warm"]

_EXTRA_MINUS: Final = "\u2212\u02d7\u2796"
"""Minus signs outside category Pd that read as a dash."""
MAPPED_CATEGORIES: Final = frozenset({"Nd", "Cf", "Mn", "Me", "Pd", "Zs", "Zl", "Zp"})
"""The Unicode general categories :func:`detection_text` changes."""
TABLE_RANGES: Final = ((0x80, 0x20000), (0xE0000, 0xE1000))
"""Where characters of :data:`MAPPED_CATEGORIES` live (planes 0-1 and the tags and
variation selectors of plane 14; planes 2-3 hold ideographs only, 15-16 private use):
scanning only these keeps building the table short. A unit test checks it still holds for
the running Python's Unicode database."""
_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]+")
_ROUNDS: Final = 3
"""Rounds of percent or backslash decoding (double encoding is common)."""


@functools.cache
def _table() -> tuple[re.Pattern[str], dict[int, str]]:
    """The non-ASCII code points :func:`detection_text` changes: a pattern of runs of those
    below U+10000, and every replacement (``""`` removes)."""
    category = unicodedata.category
    chars = [chr(cp) for start, stop in TABLE_RANGES for cp in range(start, stop)]
    table: dict[int, str] = {}
    for char, cat in zip(chars, map(category, chars), strict=True):
        if cat not in MAPPED_CATEGORIES:
            continue
        if cat == "Nd":
            table[ord(char)] = str(unicodedata.decimal(char))
        elif cat == "Pd":
            table[ord(char)] = "-"
        elif cat == "Zs":
            table[ord(char)] = " "
        elif cat in ("Zl", "Zp"):
            table[ord(char)] = "\n"
        else:
            table[ord(char)] = ""
    for char in _EXTRA_MINUS:
        table[ord(char)] = "-"
    # Only the Basic Multilingual Plane goes into the pattern: a class that holds astral
    # code points compiles to a list of ranges tried one by one, ten times slower.
    ranges: list[str] = []
    points = sorted(point for point in table if point <= 0xFFFF)
    start = previous = points[0]
    for point in [*points[1:], -1]:
        if point == previous + 1:
            previous = point
            continue
        ranges.append(
            f"\\U{start:08x}" if start == previous else f"\\U{start:08x}-\\U{previous:08x}"
        )
        start = previous = point
    return re.compile(f"[{''.join(ranges)}]+"), table


def warm() -> None:
    """Build the code-point table now (a server calls this at start, not on a request)."""
    _table()


def detection_text(text: str) -> str:
    """``text`` as the detectors should see it (see the module docstring). Pure."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    pattern, table = _table()
    text = pattern.sub(lambda match: match.group().translate(table), text)
    if _ASTRAL.search(text) is None:
        return text
    return _ASTRAL.sub(lambda match: match.group().translate(table), text)


_NUMERIC_ESCAPE: Final = re.compile(
    r"\\(?:u\{([0-9A-Fa-f]{1,6})\}|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|x([0-9A-Fa-f]{2}))"
)
_PUNCTUATION_ESCAPE: Final = re.compile(r"\\([^0-9A-Za-z\s])")


def _unescape_match(match: re.Match[str]) -> str:
    digits = next(group for group in match.groups() if group is not None)
    point = int(digits, 16)
    return chr(point) if point <= sys.maxunicode else match.group()


def _backslash_decoded(text: str) -> str:
    """``\\uXXXX``, ``\\u{X…}``, ``\\UXXXXXXXX`` and ``\\xXX`` escapes decoded, and a
    backslash before punctuation dropped (``\\@``, ``\\.``), up to three rounds (an
    escape inside a JSON string reads ``\\\\u0040`` in the raw body). Punctuation
    escapes, common in code, are replaced without a Python call per match."""
    for _ in range(_ROUNDS):
        decoded = _PUNCTUATION_ESCAPE.sub(r"\1", text)
        if "\\" in decoded:
            decoded = _NUMERIC_ESCAPE.sub(_unescape_match, decoded)
        if decoded == text or "\\" not in decoded:
            return decoded
        text = decoded
    return text


def _percent_decoded(text: str) -> list[str]:
    """Percent-decoded forms, one per round until nothing changes; ``+`` as a space too."""
    forms: list[str] = []
    current = text
    for _ in range(_ROUNDS):
        if "%" not in current:
            break
        decoded = unquote(current, errors="replace")
        if decoded == current:
            break
        forms.append(decoded)
        current = decoded
    if "+" in text:
        forms.append(unquote_plus(current, errors="replace"))
    return forms


def decoded_forms(text: str) -> list[str]:
    """The forms of ``text`` an escape-decoding reader could see, other than ``text``
    itself: backslash escapes (``\\u0040``, ``\\x40``), percent-encoding (``%40``, up to
    three rounds, ``+`` as a space) and HTML character references (``&#64;``,
    ``&commat;``), each alone and all in sequence. Only computed for the markers present
    (``\\``, ``%`` or ``+``, ``&``); empty when there are none."""
    forms: list[str] = []
    combined = text
    if "%" in text or "+" in text:
        percent = _percent_decoded(text)
        forms.extend(percent)
        if percent:
            combined = percent[-1]
    if "&" in combined:
        entities = html.unescape(combined)
        if entities != combined:
            forms.append(entities)
            combined = entities
    if "\\" in combined:
        escaped = _backslash_decoded(combined)
        if escaped != combined:
            forms.append(escaped)
            combined = escaped
    if "\\" in text and combined is not text:
        alone = _backslash_decoded(text)
        if alone != text and alone not in forms:
            forms.append(alone)
    return [form for form in dict.fromkeys(forms) if form != text]


_BASE64_ALPHABET: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-="
)
_BASE64_MASK: Final = str.maketrans(
    {chr(code): "a" if chr(code) in _BASE64_ALPHABET else " " for code in range(128)}
)
_LONG_RUN: Final = "a" * 16
"""A run that may be base64 (standard or URL-safe alphabet, padding): 16 characters or
more, the shortest that can spell a card number or an address."""
_MASKED_RUN: Final = re.compile("a{16,}")
_AT: Final = re.compile(r"\s*[\[({<]\s*at\s*[\])}>]\s*", re.IGNORECASE)
_BRACKETED_AT: Final = re.compile(r"[\[({<]\s*at\s*[\])}>]", re.IGNORECASE)
""":data:`_AT` without the white space around it: starting at a bracket, it searches ~8x
faster, so a text without one costs little."""
_DOT: Final = re.compile(r"\s*[\[({<]\s*dot\s*[\])}>]\s*", re.IGNORECASE)


def _base64_text(run: str) -> str | None:
    """``run`` decoded from base64 when that gives printable UTF-8 text, else None."""
    if len(run.rstrip("=")) % 4 == 1:
        return None
    alphabet = b"-_" if ("-" in run or "_" in run) else None
    try:
        raw = base64.b64decode(run.rstrip("=") + "=" * (-len(run.rstrip("=")) % 4), alphabet)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return text if text.isprintable() or text.strip().isprintable() else None


def hidden_forms(text: str) -> list[str]:
    """What a model reads in ``text`` through base64 runs (each run that decodes to text,
    one per line) and through ``name [at] domain (dot) com`` spellings; empty when there is
    neither."""
    forms: list[str] = []
    # split first: the run pattern alone restarts at every letter of every word (~1 ms
    # for 64 KiB of prose); only tokens long enough to hold a run are searched
    # base64 characters masked to "a" (one C-level pass, ~60 us for 64 KiB): a text with no
    # run long enough costs nothing more; the run pattern alone, on the text, restarts at
    # every letter of every word (~1 ms for 64 KiB of prose)
    masked = text.translate(_BASE64_MASK)
    decoded: list[str] = []
    if _LONG_RUN in masked:
        runs = [text[m.start() : m.end()] for m in _MASKED_RUN.finditer(masked)]
        decoded = [found for run in runs if (found := _base64_text(run))]
    if decoded:
        forms.append("\n".join(decoded))
    bracketed = any(bracket in text for bracket in "[({<")
    if bracketed and _BRACKETED_AT.search(text) is not None:
        forms.append(_DOT.sub(".", _AT.sub("@", text)))
    return forms
