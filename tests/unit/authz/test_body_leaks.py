"""Body inspection reads at least what an upstream parser or a model can read in the bytes.

Each test is a way personal data got past the inspector to a cloud tier (a full buffer of
a streamed body taken as complete; JSON the inspector could not parse scanned as raw text;
duplicate keys, numbers and split strings the scan never saw; Unicode forms the ASCII
detectors missed), or a guard that the fix does not flag ordinary bodies.
"""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

from tiermesh.agents.authz import detection_text, estimate_tokens, inspect_body
from tiermesh.agents.authz.body import HOLDS_NUL, NESTED_TOO_DEEP, NOT_JSON, NOT_UTF8
from tiermesh.agents.authz.normalize import (
    MAPPED_CATEGORIES,
    TABLE_RANGES,
    decoded_forms,
)

LIMIT = 64 * 1024
SSN = "123-45-6789"
BOM = b"\xef\xbb\xbf"


def chat(*contents: object, **extra: object) -> bytes:
    messages = [{"role": "user", "content": c} for c in contents]
    return json.dumps({"model": "m", "messages": messages, **extra}, ensure_ascii=False).encode()


def kinds(body: bytes) -> list[str]:
    return [f.kind for f in inspect_body(body, max_bytes=LIMIT).findings]


# 1. A full buffer of a body still streaming ------------------------------------------------


def streamed_prefix(limit: int) -> bytes:
    """The first ``limit`` bytes of a chat body whose tail (never sent to ext_authz) holds
    an SSN: what Envoy sends for a chunked or HTTP/2 body without a content-length."""
    body = chat("x" * limit, f"my ssn is {SSN}")
    assert SSN.encode() not in body[:limit]
    return body[:limit]


def test_a_full_buffer_without_a_content_length_is_truncated() -> None:
    inspected = inspect_body(streamed_prefix(LIMIT), max_bytes=LIMIT)
    assert inspected.truncated
    assert inspected.inspected_bytes == LIMIT
    assert inspected.uninspectable is None, "truncation is reported as truncated only"
    assert inspected.token_estimate >= LIMIT // 4


def test_a_full_buffer_with_a_larger_content_length_is_truncated() -> None:
    prefix = streamed_prefix(LIMIT)
    assert inspect_body(prefix, max_bytes=LIMIT, declared_length=LIMIT + 100).truncated


def test_a_full_buffer_whose_content_length_says_it_is_complete_is_not_truncated() -> None:
    body = chat("y" * (LIMIT - len(chat(""))))
    assert len(body) == LIMIT
    inspected = inspect_body(body, max_bytes=LIMIT, declared_length=LIMIT)
    assert not inspected.truncated
    assert inspected.json
    assert inspected.findings == ()


def test_a_body_shorter_than_the_buffer_without_a_content_length_is_complete() -> None:
    """A chunked body that ended before the buffer filled: Envoy saw its end."""
    inspected = inspect_body(chat("hello"), max_bytes=LIMIT)
    assert not inspected.truncated
    assert inspected.json


def test_a_body_cut_inside_a_character_is_truncated_not_invalid_utf8() -> None:
    body = chat("\u00e9" * LIMIT)[:LIMIT]
    assert body[-1] >= 0x80
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert inspected.truncated
    assert (inspected.encoding, inspected.uninspectable) == ("utf-8", None)


def test_a_truncated_body_is_still_scanned_with_its_escapes_decoded() -> None:
    body = chat("mail bob\\u0040example.com " + "x" * LIMIT)[:LIMIT]
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert inspected.truncated
    assert [f.kind for f in inspected.findings] == ["email"]


# 2. JSON the inspector could not parse -------------------------------------------------------

ESCAPED_EMAIL = chat("write to jane.doe\\u0040example.com").replace(b"\\\\u", b"\\u")


def test_the_escaped_email_fixture_is_json_with_a_decoded_at_sign() -> None:
    assert json.loads(ESCAPED_EMAIL)["messages"][0]["content"].endswith("@example.com")
    assert b"@" not in ESCAPED_EMAIL


def test_a_bom_before_json_is_dropped_reported_and_the_json_parsed() -> None:
    inspected = inspect_body(BOM + ESCAPED_EMAIL, max_bytes=LIMIT)
    assert inspected.bom
    assert inspected.json
    assert inspected.uninspectable is None
    assert [f.kind for f in inspected.findings] == ["email"]


def test_a_bom_and_white_space_before_json_still_parse() -> None:
    inspected = inspect_body(BOM + b" \r\n\t" + ESCAPED_EMAIL, max_bytes=LIMIT)
    assert (inspected.json, inspected.bom) == (True, True)
    assert [f.kind for f in inspected.findings] == ["email"]


def test_json_nested_deeper_than_the_parser_goes_is_uninspectable_and_still_scanned() -> None:
    depth = sys.getrecursionlimit() * 2
    body = b"[" * depth + b'"jane.doe\\u0040example.com"' + b"]" * depth
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert not inspected.json
    assert inspected.uninspectable == NESTED_TOO_DEEP
    assert [f.kind for f in inspected.findings] == ["email"]


def test_json_nested_within_the_parser_depth_is_read() -> None:
    body = b"[" * 200 + b'"jane.doe\\u0040example.com"' + b"]" * 200
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert (inspected.json, inspected.uninspectable) == (True, None)
    assert [f.kind for f in inspected.findings] == ["email"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(ESCAPED_EMAIL[:-1] + b",}", id="trailing comma"),
        pytest.param(b"// JSON5\n" + ESCAPED_EMAIL, id="comment before"),
        pytest.param(ESCAPED_EMAIL.replace(b'"model"', b"model"), id="unquoted key"),
        pytest.param(ESCAPED_EMAIL.replace(b'"', b"'"), id="single quotes"),
        pytest.param(b"  \n" + ESCAPED_EMAIL + b" trailing", id="extra data"),
        pytest.param(b"[" + ESCAPED_EMAIL, id="unterminated"),
    ],
)
def test_a_body_that_looks_like_json_but_does_not_parse_is_uninspectable(body: bytes) -> None:
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert not inspected.json
    if body.startswith(b"//"):
        assert inspected.uninspectable is None, "starts like a comment, not like JSON"
    else:
        assert inspected.uninspectable == NOT_JSON
    assert [f.kind for f in inspected.findings] == ["email"], "escapes decoded all the same"


def test_control_characters_in_json_strings_are_read_as_lenient_parsers_do() -> None:
    body = b'{"messages": [{"content": "line one\nmail jane.doe\\u0040example.com"}]}'
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert (inspected.json, inspected.uninspectable) == (True, None)
    assert [f.kind for f in inspected.findings] == ["email"]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("mail jane.doe\\u0040example.com", "email"),
        ("mail jane.doe\\x40example.com", "email"),
        ("mail jane.doe\\u{40}example.com", "email"),
        ("mail jane.doe\\@example.com", "email"),
        ("mail jane.doe%40example.com", "email"),
        ("mail jane.doe%2540example.com", "email"),
        ("mail jane.doe&#64;example.com", "email"),
        ("mail jane.doe&#x40;example.com", "email"),
        ("mail jane.doe&commat;example.com", "email"),
        ("card 4111+1111+1111+1111", "payment_card"),
        ("ssn 123%2D45%2D6789", "us_ssn"),
        ("ssn 123\\u002d45\\u002d6789", "us_ssn"),
        ("card 4111&#32;1111&#32;1111&#32;1111", "payment_card"),
    ],
)
def test_a_text_body_is_scanned_in_the_decoded_forms_a_reader_sees(text: str, kind: str) -> None:
    inspected = inspect_body(text.encode(), max_bytes=LIMIT)
    assert (inspected.json, inspected.uninspectable) == (False, None)
    assert [f.kind for f in inspected.findings] == [kind]


@pytest.mark.parametrize(
    "content",
    ["mail jane.doe&#64;example.com", "mail jane.doe%40example.com", "jane.doe\\u0040example.com"],
)
def test_json_strings_are_scanned_in_their_decoded_forms_too(content: str) -> None:
    assert kinds(chat(content)) == ["email"]


def test_decoded_forms_are_computed_only_when_a_marker_is_present() -> None:
    assert decoded_forms("plain words, an @ sign and 12-34") == []
    assert decoded_forms("a\\u0040b") == ["a@b"]


@pytest.mark.parametrize(
    ("body", "encoding", "reason"),
    [
        (b"\xc3\x28 invalid then a@example.com", "invalid_utf8", NOT_UTF8),
        (b"\x00\x01 binary a@example.com", "binary", HOLDS_NUL),
        (b"\x00\xff binary and invalid a@example.com", "binary", HOLDS_NUL),
        (b'{"content": "a@example.com\x00"}', "binary", HOLDS_NUL),
    ],
)
def test_bodies_not_read_as_utf8_text_are_uninspectable_and_still_scanned(
    body: bytes, encoding: str, reason: str
) -> None:
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert (inspected.encoding, inspected.uninspectable) == (encoding, reason)
    assert [f.kind for f in inspected.findings] == ["email"]


@pytest.mark.parametrize(
    "body",
    [b"", b"plain text question", chat("hello"), b"12345", b'"just a string"', b"null"],
)
def test_ordinary_bodies_are_not_uninspectable(body: bytes) -> None:
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert inspected.uninspectable is None
    assert not inspected.bom


# 3. What the JSON scan never saw ---------------------------------------------------------


def test_every_value_of_a_repeated_key_is_scanned_and_the_estimate_keeps_the_last() -> None:
    body = (
        b'{"model": "m", "messages": [{"role": "user",'
        b' "content": "call jane.doe@example.com", "content": "hello"}]}'
    )
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert inspected.json
    assert [f.kind for f in inspected.findings] == ["email"]
    assert inspected.token_estimate == estimate_tokens(json.loads(body), "") == 2


def test_a_repeated_top_level_messages_key_is_scanned_in_full() -> None:
    first = json.dumps([{"role": "user", "content": f"my ssn is {SSN}"}])
    second = json.dumps([{"role": "user", "content": "hi"}])
    body = f'{{"messages": {first}, "messages": {second}}}'.encode()
    assert kinds(body) == ["us_ssn"]


@pytest.mark.parametrize(
    "document",
    [
        {"seed": 4111111111111111},
        {"seed": 4111111111111111.0},
        {"metadata": {"ids": [1, 4111111111111111, 3]}},
        {"user": -4111111111111111},
    ],
)
def test_number_literals_are_scanned_as_written(document: object) -> None:
    assert kinds(json.dumps(document).encode()) == ["payment_card"]


def content_parts(*texts: str) -> bytes:
    parts = [{"type": "text", "text": t} for t in texts]
    return json.dumps({"messages": [{"role": "user", "content": parts}]}).encode()


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (content_parts("4111 1111", "1111 1111"), "payment_card"),
        (content_parts("4111 1111 ", "1111 1111"), "payment_card"),
        (content_parts("card 4111", "1111", "1111", "1111 thanks"), "payment_card"),
        (chat("john.doe", "@example.com"), "email"),
        (chat("reply to john", ".doe@", "example.com"), "email"),
        (chat("my ssn is 123-45-", "6789"), "us_ssn"),
        (json.dumps({"prompt": ["call +44 20 ", "7946 0958"]}).encode(), "phone"),
        (json.dumps({"input": ["GB82 WEST 1234 ", "5698 7654 32"]}).encode(), "iban"),
        (
            json.dumps({"messages": [{"content": "4111 1111"}], "x": ["1111 1111"]}).encode(),
            "payment_card",
        ),
    ],
)
def test_personal_data_split_across_strings_is_found(body: bytes, kind: str) -> None:
    assert kinds(body) == [kind]


def test_a_split_finding_points_past_the_primary_text() -> None:
    inspected = inspect_body(chat("john.doe", "@example.com"), max_bytes=LIMIT)
    (finding,) = inspected.findings
    primary = "\n".join(["model", "m", "messages", "role", "user", "content", "john.doe"])
    primary += "\n" + "\n".join(["role", "user", "content", "@example.com"])
    start, end = finding.spans[0]
    assert start > len(primary)
    assert end - start >= len("john.doe@example.com")


def test_kinds_the_primary_text_shows_keep_their_counts() -> None:
    body = content_parts("a@example.com and b@example.com", "4111 1111 1111 1111", "c@example.com")
    inspected = inspect_body(body, max_bytes=LIMIT)
    assert [(f.kind, f.count) for f in inspected.findings] == [("email", 3), ("payment_card", 1)]
    # Spans of the primary text's findings stay where the primary text has them.
    assert all(end <= len(body) for f in inspected.findings for _, end in f.spans)


@pytest.mark.parametrize(
    "body",
    [
        chat("What is 2 + 2?", "And 12 * 12?", "Then 2024 - 1999.", max_tokens=256, seed=42),
        json.dumps({"prompt": [15496, 11, 995, 212, 555, 1234, 4111, 1111, 1111, 1111]}).encode(),
        json.dumps({"input": ["order 2024", "06 01", "ticket 48213"]}).encode(),
        content_parts("See section 4.", "1 of the report, page 12", "34-56 are blank"),
        chat("Summarise the Q3 report: revenue grew 12.5% to 4,200,000 EUR & churn fell 3%"),
    ],
)
def test_ordinary_bodies_with_numbers_have_no_findings(body: bytes) -> None:
    assert kinds(body) == []


# 4. Unicode forms a model reads ------------------------------------------------------------


def fullwidth(text: str) -> str:
    """``text`` in fullwidth forms (U+FF01-U+FF5E), spaces kept."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def digits_of(zero: int, text: str) -> str:
    """``text`` with its ASCII digits in the script whose zero is ``zero``."""
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (f"card {fullwidth('4111 1111 1111 1111')}", "payment_card"),
        (f"mail jane.doe{fullwidth('@')}example.com", "email"),
        (f"mail {fullwidth('jane.doe@example.com')}", "email"),
        (f"ssn {digits_of(0x0660, SSN)}", "us_ssn"),  # Arabic-Indic
        (f"ssn {digits_of(0x0966, SSN)}", "us_ssn"),  # Devanagari
        (f"ssn {digits_of(0x1E950, SSN)}", "us_ssn"),  # Adlam, beyond U+FFFF
        ("card 4111\U000e00201111\U000e00201111\U000e00201111", "payment_card"),  # tag spaces
        ("mail jane\u200b.doe@exam\u200dple.com", "email"),
        ("mail jane.doe\u00ad@example.com", "email"),
        ("card 4111\ufeff1111\u20601111\u200c1111", "payment_card"),
        ("ssn 123\u221245\u22126789", "us_ssn"),
        ("ssn 123\u201345\u20136789", "us_ssn"),
        ("card 4111\u00a01111\u20091111\u202f1111", "payment_card"),
        ("card 4\u0332111 1111 1111 1111", "payment_card"),
        ("ssn 123\u200b-45-6789", "us_ssn"),
    ],
)
def test_unicode_forms_of_personal_data_are_found(content: str, kind: str) -> None:
    assert kinds(chat(content)) == [kind]
    assert kinds(content.encode()) == [kind], "as a text body too"


def test_detection_text_returns_ascii_text_itself() -> None:
    text = "plain ascii 4111 1111"
    assert detection_text(text) is text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (fullwidth("4111@x"), "4111@x"),
        ("\u0664\u0662 \u09ea\u09e8 \u096a\u0968", "42 42 42"),
        ("a\u200bb\u00adc\ufeffd\u2060e", "abcde"),
        ("1\u20132\u20143\u22124\u2011", "1-2-3-4-"),
        ("a\u00a0b\u2009c\u3000d", "a b c d"),
        ("a\u2028b\u2029c", "a\nb\nc"),
        ("\ufb01 \u2460 x\u00b2", "fi 1 x2"),
        ("\u65e5\u672c\u8a9e \u00e9", "\u65e5\u672c\u8a9e \u00e9"),
    ],
)
def test_detection_text_maps_what_a_model_reads_to_ascii(text: str, expected: str) -> None:
    assert detection_text(text) == expected


def test_the_detection_table_covers_every_code_point_of_its_categories() -> None:
    """The table is built from :data:`TABLE_RANGES` only: check that no code point of a
    mapped category lives outside them in this Python's Unicode database."""
    covered = [range(start, stop) for start, stop in TABLE_RANGES]
    outside = [
        hex(point)
        for point in range(0x80, sys.maxunicode + 1)
        if not any(point in r for r in covered)
        and unicodedata.category(chr(point)) in MAPPED_CATEGORIES
    ]
    assert outside == []


def test_spans_of_a_unicode_body_point_into_its_detection_text() -> None:
    content = f"card {fullwidth('4111 1111 1111 1111')}"
    inspected = inspect_body(content.encode(), max_bytes=LIMIT)
    ((start, end),) = inspected.findings[0].spans
    assert detection_text(content)[start:end] == "4111 1111 1111 1111"
