"""Turn each engine's error text into located :class:`RegoProblem` values.

Neither embedded engine returns structured diagnostics, only text:

- OPA (Go library and server messages): ``<file>:<line>: <code>: <message>``,
  one per line, after a header such as ``2 errors occurred:``.
- regorus: a rustc-style block ``--> <file>:<line>:<col>`` ... ``error: <message>``,
  followed by a Rust backtrace when ``RUST_BACKTRACE`` is set.

Text that does not match yields one problem without a location, so no
diagnostic is ever lost.
"""

from __future__ import annotations

import re

from tiermesh.rego.errors import RegoProblem

__all__ = ["opa_problems", "regorus_problems", "strip_backtrace"]

_OPA_LINE = re.compile(
    r"(?P<file>[^\s:][^:\n]*?):(?P<line>\d+)(?::(?P<col>\d+))?: "
    r"(?P<code>[a-z][a-z_]*_error): (?P<message>[^\n]*)"
)
_REGORUS_AT = re.compile(r"-->\s*(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+)")
_REGORUS_MESSAGE = re.compile(r"^error: (?P<message>[^\n]*)", re.MULTILINE)

PARSE_CODE = "rego_parse_error"


def strip_backtrace(text: str) -> str:
    """Drop a Rust backtrace appended to an error message."""
    return text.split("\nStack backtrace:", 1)[0].strip()


def opa_problems(text: str) -> tuple[list[RegoProblem], bool]:
    """Problems in an OPA error text, and whether any of them is a parse error."""
    problems: list[RegoProblem] = []
    is_parse = False
    for match in _OPA_LINE.finditer(text):
        is_parse = is_parse or match["code"] == PARSE_CODE
        problems.append(
            RegoProblem(
                message=match["message"].strip(),
                file=match["file"],
                line=int(match["line"]),
                column=int(match["col"]) if match["col"] else None,
            )
        )
    if not problems:
        problems.append(RegoProblem(message=text.strip()))
        is_parse = PARSE_CODE in text
    return problems, is_parse


def regorus_problems(text: str) -> list[RegoProblem]:
    """Problems in a regorus error text (regorus reports one at a time)."""
    text = strip_backtrace(text)
    at = _REGORUS_AT.search(text)
    said = _REGORUS_MESSAGE.search(text)
    if at is None:
        return [RegoProblem(message=said["message"].strip() if said else text)]
    return [
        RegoProblem(
            message=said["message"].strip() if said else text,
            file=at["file"].strip(),
            line=int(at["line"]),
            column=int(at["col"]),
        )
    ]
