"""Text as the detectors should see it: the forms a model reads, mapped to ASCII.

The detectors match ASCII shapes (``re.ASCII``). A model reads ``\uff14\uff11`` (fullwidth digits),
``john\u200b@example.com`` (a zero-width space inside) or ``555\u2212 0123`` (a minus sign)
as the digits, address and number they spell. :func:`detection_text` maps those forms
before detection: NFKC, every Unicode decimal digit to its ASCII digit, format characters
(category Cf: zero-width spaces and joiners, soft hyphens, BOMs) removed, dashes (Pd) to
``-`` and spaces (Zs) to `` ``. ASCII text is returned as it is. Pure; thread-safe.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Final

__all__ = ["detection_text", "warm"]

_RANGES: Final = ((0x80, 0x20000), (0xE0000, 0xE1000))
"""Where the mapped characters live (planes 0-1 and the tags plane); plane 2-3 ideographs
hold none, and scanning only these keeps building the table ~0.1 s."""
_EXTRA: Final = {0x2212: "-", 0xFE63: "-", 0xFF0D: "-"}
"""Minus signs read as dashes (category Sm, not Pd)."""


@functools.cache
def _table() -> dict[int, str | None]:
    """Code point -> replacement for every non-ASCII digit, format char, dash and space."""
    table: dict[int, str | None] = dict(_EXTRA)
    for code in (c for start, stop in _RANGES for c in range(start, stop)):
        char = chr(code)
        category = unicodedata.category(char)
        if category == "Nd":
            table[code] = str(unicodedata.decimal(char))
        elif category == "Cf":
            table[code] = None
        elif category == "Pd":
            table[code] = "-"
        elif category == "Zs":
            table[code] = " "
    return table


def warm() -> None:
    """Build the mapping table now (a server calls this at start, not on a request)."""
    _table()


def detection_text(text: str) -> str:
    """``text`` with the non-ASCII forms of digits, separators and hidden characters mapped
    to what they read as (see the module docstring)."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).translate(_table())
