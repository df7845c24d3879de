"""Adds the OpenAI usage chunk to a completion's SSE stream, which llama-cpp-python's
server leaves out even when the request asks for it (``stream_options.include_usage``).

`UsageStream` rewrites the bytes of a stream: every event passes through unchanged, and
right before the ``data: [DONE]`` event it inserts::

    data: {"id": ..., "object": ..., "created": ..., "model": ..., "choices": [],
           "usage": {"prompt_tokens": ..., "completion_tokens": ..., "total_tokens": ...}}

with ``id``, ``object``, ``created`` and ``model`` copied from the stream's first chunk,
as OpenAI sends it. The counts come from a callable (see `tiermesh.agents.models.generation`
for where they are taken); when it has none, nothing is inserted rather than a guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Usage", "UsageStream", "wants_usage"]

_EVENT_END: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_CHUNK_FIELDS: Final = ("id", "object", "created", "model")


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def wants_usage(body: bytes) -> bool:
    """Whether a completion request body asks for a streamed usage chunk: ``"stream":
    true`` and ``"stream_options": {"include_usage": true}``. A body that is not a JSON
    object asks for nothing."""
    try:
        request = json.loads(body)
    except ValueError:
        return False
    if not isinstance(request, dict) or request.get("stream") is not True:
        return False
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class UsageStream:
    """Rewrites one SSE stream; feed it the body bytes in order, as they come.

    `feed` returns the bytes to send now: every complete event, unchanged, with the usage
    event in front of ``[DONE]``; an incomplete event is held until its end arrives.
    `flush` returns whatever is held (a stream cut short). Not thread-safe.
    """

    def __init__(self, usage: Callable[[], Usage | None]) -> None:
        self._usage = usage
        self._held = b""
        self._first: dict[str, Any] | None = None

    def feed(self, data: bytes) -> bytes:
        self._held += data
        out = bytearray()
        while (end := _EVENT_END.search(self._held)) is not None:
            event, self._held = self._held[: end.end()], self._held[end.end() :]
            payload = _data_of(event[: end.start()])
            if payload == b"[DONE]":
                out += self._usage_event(end.group()[: len(end.group()) // 2])
            elif payload is not None and self._first is None:
                self._first = _chunk_fields(payload)
            out += event
        return bytes(out)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def _usage_event(self, newline: bytes) -> bytes:
        usage = self._usage()
        if usage is None or self._first is None:
            return b""
        chunk = {**self._first, "choices": [], "usage": usage.as_dict()}
        return b"data: " + json.dumps(chunk).encode() + newline + newline


def _data_of(event: bytes) -> bytes | None:
    """The event's data (its ``data`` lines joined), None when it has none."""
    lines = [
        line[5:].removeprefix(b" ")
        for line in re.split(rb"\r\n|\n|\r", event)
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


def _chunk_fields(payload: bytes) -> dict[str, Any] | None:
    try:
        chunk = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(chunk, dict) or not all(k in chunk for k in _CHUNK_FIELDS):
        return None
    return {k: chunk[k] for k in _CHUNK_FIELDS}
