"""Body inspection and the token estimate: odd bodies never fail, no text leaves."""

from __future__ import annotations

import hashlib
import json

import pytest

from tiermesh.agents.authz import estimate_tokens, inspect_body

LIMIT = 64 * 1024


def chat(*contents: object, **extra: object) -> bytes:
    messages = [{"role": "user", "content": c} for c in contents]
    return json.dumps({"model": "m", "messages": messages, **extra}).encode()


@pytest.mark.parametrize(
    ("document", "text", "expected"),
    [
        ({"messages": [{"content": "abcdefgh"}]}, "", 2),
        ({"messages": [{"content": "abcdefghi"}], "max_tokens": 10}, "", 13),
        ({"messages": [{"content": [{"type": "text", "text": "abcd"}]}]}, "", 1),
        ({"prompt": ["abcd", "efgh"], "max_completion_tokens": 5, "max_tokens": 99}, "", 7),
        ({"input": "abcd"}, "", 1),
        ({"messages": "not a list", "max_tokens": True}, "", 0),
        ({"other": "field"}, "12345678", 2),
        (None, "x" * 41, 11),
    ],
)
def test_token_estimate(document: object, text: str, expected: int) -> None:
    assert estimate_tokens(document, text) == expected


def test_json_strings_are_scanned_with_escapes_decoded() -> None:
    body = b'{"messages":[{"role":"user","content":"mail bob\\u0040example.com"}]}'
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert inspected.json
    assert [f.kind for f in inspected.findings] == ["email"]
    assert inspected.encoding == "utf-8"
    assert not inspected.truncated
    assert inspected.sha256 == "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    ("body", "encoding", "uninspectable"),
    [
        (b"", "empty", None),
        (b"\x00\x01\x02card 4111 1111 1111 1111\xff", "binary", "body holds NUL bytes"),
        (b"\x00\x01 binary 4111 1111 1111 1111", "binary", "body holds NUL bytes"),
        (b"\xc3\x28 invalid then a@example.com", "invalid_utf8", "body is not valid UTF-8"),
        (b"[" * 60_000, "utf-8", "JSON nested deeper than the inspector parses"),
        (b"[" * 100_000, "utf-8", None),  # longer than LIMIT: truncated, not parsed
        (b'{"unterminated": "a@example.com', "utf-8", "body looks like JSON but does not parse"),
        (b"plain text a@example.com", "utf-8", None),
    ],
)
def test_odd_bodies_are_inspected_without_failing(
    body: bytes, encoding: str, uninspectable: str | None
) -> None:
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert inspected.encoding == encoding
    assert inspected.uninspectable == uninspectable
    assert not inspected.json
    if b"4111" in body:
        assert [f.kind for f in inspected.findings] == ["payment_card"]
    if b"@example" in body:
        assert [f.kind for f in inspected.findings] == ["email"]


def test_a_long_body_is_cut_and_marked() -> None:
    body = chat("x" * 200_000)
    inspected = inspect_body(body, max_bytes=1024)
    assert (inspected.received_bytes, inspected.inspected_bytes) == (len(body), 1024)
    assert inspected.truncated
    assert not inspected.json
    assert inspected.token_estimate >= len(body) // 4


def test_partial_or_short_of_its_declared_length_is_truncated() -> None:
    body = chat("hello")
    assert inspect_body(body, max_bytes=LIMIT, partial=True).truncated
    assert inspect_body(body, max_bytes=LIMIT, declared_length=len(body) + 1).truncated
    assert not inspect_body(body, max_bytes=LIMIT, declared_length=len(body)).truncated


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        inspect_body(b"", max_bytes=-1)
