"""How sure a model was of its answer, from the token log-probabilities it returned.

**Measure**: the mean, over the answer's generated tokens, of the top-1 token
probability at each position — ``exp`` of the largest log-probability offered there (the
chosen token's, or a higher alternative's from ``top_logprobs``). 1.0 means the model
never hesitated; a value near ``1 / vocabulary`` means it guessed. An answer with several
choices is as confident as its least confident choice. An answer without any token
log-probabilities has confidence 0.0: it cannot be judged, so a cascade escalates.

Both shapes llama.cpp's server writes are read: the chat shape
(``logprobs.content[i] = {token, logprob, top_logprobs: [{token, logprob}, ...]}``) and
the completions shape (``logprobs.token_logprobs[i]``, ``logprobs.top_logprobs[i] =
{token text: logprob}``). Pure functions; safe from any thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

__all__ = ["answer_confidence", "choice_confidence", "strip_logprobs"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) or value == -math.inf else None


def _chat_positions(content: list[Any]) -> Iterator[float | None]:
    for position in content:
        if not isinstance(position, dict):
            yield None
            continue
        best = _number(position.get("logprob"))
        top = position.get("top_logprobs")
        for alternative in top if isinstance(top, list) else []:
            if isinstance(alternative, dict):
                value = _number(alternative.get("logprob"))
                if value is not None and (best is None or value > best):
                    best = value
        yield best


def _completion_positions(chosen: list[Any], top: Any) -> Iterator[float | None]:
    tops = top if isinstance(top, list) else []
    for index, logprob in enumerate(chosen):
        best = _number(logprob)
        alternatives = tops[index] if index < len(tops) else None
        for value in alternatives.values() if isinstance(alternatives, dict) else []:
            number = _number(value)
            if number is not None and (best is None or number > best):
                best = number
        yield best


def choice_confidence(choice: Any) -> float:
    """Mean top-1 token probability of one choice of an answer; 0.0 when it has none."""
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    if not isinstance(logprobs, dict):
        return 0.0
    content = logprobs.get("content")
    chosen = logprobs.get("token_logprobs")
    if isinstance(content, list):
        positions = list(_chat_positions(content))
    elif isinstance(chosen, list):
        positions = list(_completion_positions(chosen, logprobs.get("top_logprobs")))
    else:
        return 0.0
    if not positions or any(p is None for p in positions):
        return 0.0
    return sum(math.exp(p) for p in positions if p is not None) / len(positions)


def answer_confidence(answer: Any) -> float:
    """Confidence of a chat or completions answer (a decoded JSON body): the least of its
    choices' (see the module docstring); 0.0 for a body that is not an answer."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices:
        return 0.0
    return min(choice_confidence(choice) for choice in choices)


def strip_logprobs(answer: Any) -> None:
    """Set every choice's ``logprobs`` to null in place (what an answer carries when the
    client did not ask for them)."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    for choice in choices if isinstance(choices, list) else []:
        if isinstance(choice, dict) and "logprobs" in choice:
            choice["logprobs"] = None
