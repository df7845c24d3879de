"""The SSE rewriter: events pass unchanged, the usage event goes right before [DONE]."""

from __future__ import annotations

import json

import pytest

from tiermesh.agents.models.usage_stream import Usage, UsageStream, wants_usage

CHUNK = {
    "id": "chatcmpl-1",
    "model": "m",
    "created": 7,
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}],
}
STREAM = (
    b": ping - 2025\n\n"
    + b"data: " + json.dumps(CHUNK).encode() + b"\n\n"
    + b"data: " + json.dumps({**CHUNK, "id": "other"}).encode() + b"\n\n"
    + b"data: [DONE]\n\n"
)  # fmt: skip
USAGE = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 7,
    "model": "m",
    "choices": [],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


def _rewrite(pieces: list[bytes], usage: Usage | None) -> bytes:
    stream = UsageStream(lambda: usage)
    return b"".join(stream.feed(piece) for piece in pieces) + stream.flush()


@pytest.mark.parametrize("size", [1, 3, 7, len(STREAM)])
def test_usage_event_goes_before_done_however_the_bytes_are_cut(size: int) -> None:
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    out = _rewrite(pieces, Usage(5, 2))
    done = STREAM.index(b"data: [DONE]")
    usage_event = b"data: " + json.dumps(USAGE).encode() + b"\n\n"
    assert out == STREAM[:done] + usage_event + STREAM[done:]


def test_crlf_streams_get_a_crlf_usage_event() -> None:
    stream = STREAM.replace(b"\n", b"\r\n")
    out = _rewrite([stream], Usage(5, 2))
    assert b'"total_tokens": 7}}\r\n\r\ndata: [DONE]\r\n\r\n' in out


def test_no_counts_no_usage_event() -> None:
    assert _rewrite([STREAM], None) == STREAM


def test_a_stream_cut_short_is_passed_on_as_is() -> None:
    cut = STREAM[: STREAM.index(b"data: [DONE]") + 6]
    assert _rewrite([cut], Usage(5, 2)) == cut


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        (b'{"stream": true, "stream_options": {"include_usage": true}}', True),
        (b'{"stream": true, "stream_options": {"include_usage": false}}', False),
        (b'{"stream": true}', False),
        (b'{"stream": false, "stream_options": {"include_usage": true}}', False),
        (b'{"stream": "yes", "stream_options": {"include_usage": true}}', False),
        (b'{"stream": true, "stream_options": null}', False),
        (b"[1]", False),
        (b"not json", False),
    ],
)
def test_wants_usage(body: bytes, wanted: bool) -> None:
    assert wants_usage(body) is wanted
