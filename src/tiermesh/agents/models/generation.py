"""Token counts taken where llama.cpp generates them: ``llama_cpp.Llama.generate``.

Every completion, streamed or not, chat or text, runs ``Llama._create_completion``, which
calls ``self.generate(prompt_tokens, ...)`` once and appends each token it gets to its
``completion_tokens`` unless the token ends the generation (end-of-generation tokens are
not counted). Its ``usage`` is ``len(prompt_tokens)`` and ``len(completion_tokens)``.
`counting_generated_tokens` wraps ``generate`` to take the same two numbers from the same
place, so they are exact, not estimates:

- the prompt tokens are the length of the token list ``generate`` is given;
- a completion token is counted when ``generate`` hands it over and it is not an
  end-of-generation token.

Why not count from the answer: a JSON answer gives its usage only at the end (a long answer
would show no tokens/s while it runs), and an SSE stream does not carry one chunk per
token in general (a character of several bytes spread over several tokens goes out as one
chunk; the tokens of a stop sequence are never sent).

The counts of a request go to the `Generation` in `current_generation`, a context variable
the request's handler sets: llama-cpp-python's server runs the generator in worker threads
with a copy of the request's context, so the wrapper finds the request's record there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import llama_cpp

__all__ = ["Generation", "counting_generated_tokens", "current_generation"]


@dataclass
class Generation:
    """The token counts of one request's generation, written by the generating thread.

    ``prompt_tokens`` is None until generation starts. When a request generates more than
    once, the counts are those of the last generation (as its ``usage`` would be).
    """

    prompt_tokens: int | None = None
    completion_tokens: int = 0


current_generation: ContextVar[Generation | None] = ContextVar(
    "tiermesh_current_generation", default=None
)
"""The record the current request's generation writes to (None: counted globally only)."""


@contextlib.contextmanager
def counting_generated_tokens(on_token: Callable[[], None]) -> Iterator[None]:
    """While active, every ``Llama.generate`` reports each completion token to ``on_token``
    (called from the generating thread; it must be thread-safe and quick) and records the
    counts in `current_generation`. Patches process-wide state: not thread-safe; enter it
    before the server starts, as `tiermesh.agents.models.serve` does. Imports llama_cpp,
    which only the model server process needs."""
    import llama_cpp  # noqa: PLC0415 - see the docstring

    original = llama_cpp.Llama.generate

    def generate(
        self: llama_cpp.Llama, tokens: Sequence[int], *args: Any, **kwargs: Any
    ) -> Generator[int, Sequence[int] | None, None]:
        record = current_generation.get()
        if record is not None:
            record.prompt_tokens = len(tokens)
            record.completion_tokens = 0
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        inner = original(self, tokens, *args, **kwargs)
        try:
            sent: Sequence[int] | None = None
            while True:
                try:
                    token = inner.send(sent)
                except StopIteration:
                    return
                if not llama_cpp.llama_vocab_is_eog(vocab, token):
                    if record is not None:
                        record.completion_tokens += 1
                    on_token()
                sent = yield token
        finally:
            inner.close()

    llama_cpp.Llama.generate = generate  # type: ignore[method-assign]
    try:
        yield
    finally:
        llama_cpp.Llama.generate = original  # type: ignore[method-assign]
