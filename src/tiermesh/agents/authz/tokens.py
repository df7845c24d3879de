"""A cheap token *estimate* for budget decisions — not a tokenizer count.

:func:`estimate_tokens` = ceil(characters of prompt text / :data:`CHARS_PER_TOKEN`) plus the
completion the caller asked for (``max_completion_tokens`` or ``max_tokens``, when a
non-negative integer). Prompt text is, for an OpenAI-style JSON object: every ``content``
string of ``messages`` (and the ``text`` of content parts), ``prompt`` (string or list of
strings) and ``input`` (string or list of strings); for anything else (not JSON, not an
object, none of those fields) it is the whole decoded body. Real tokenizers differ by
model and language (code and non-Latin scripts use more tokens per character); the policy
must treat the number as an order of magnitude.

Pure functions; thread-safe.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["CHARS_PER_TOKEN", "estimate_tokens", "prompt_chars"]

CHARS_PER_TOKEN: Final = 4
"""Characters per token of the estimate (the usual rule of thumb for English text)."""

_MAX_PARTS: Final = 100_000


def _strings(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(v) for v in value[:_MAX_PARTS] if isinstance(v, str))
    return 0


def _message_chars(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages[:_MAX_PARTS]:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content[:_MAX_PARTS]:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"])
                elif isinstance(part, str):
                    total += len(part)
    return total


def prompt_chars(document: Any, text: str) -> int:
    """Characters of prompt text in ``document`` (the parsed body, or None when it is not
    JSON); ``len(text)`` when the document has no known prompt field."""
    if isinstance(document, dict):
        fields = ("messages", "prompt", "input")
        if any(name in document for name in fields):
            return (
                _message_chars(document.get("messages"))
                + _strings(document.get("prompt"))
                + _strings(document.get("input"))
            )
    return len(text)


def _requested_completion(document: Any) -> int:
    if not isinstance(document, dict):
        return 0
    for name in ("max_completion_tokens", "max_tokens"):
        value = document.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def estimate_tokens(document: Any, text: str) -> int:
    """Estimated prompt + requested completion tokens (see the module docstring)."""
    chars = prompt_chars(document, text)
    return -(-chars // CHARS_PER_TOKEN) + _requested_completion(document)
