"""PII detectors as tables: what each must find, and near-misses it must not."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator

import pytest

from tiermesh.agents.authz import DetectorRegistry, default_registry, detect
from tiermesh.agents.authz.detectors import (
    _CARD_PREFIX,
    DEFAULT_DETECTORS,
    IBAN_LENGTHS,
    EmailDetector,
    iban_valid,
    luhn_valid,
)

FOUND = [
    ("email", "write to bob.smith+tag@example.co.uk today", "bob.smith+tag@example.co.uk"),
    ("email", "<alice@mail.example.org>", "alice@mail.example.org"),
    ("phone", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("phone", "E.164: +4915112345678.", "+4915112345678"),
    ("phone", "office (212) 555-0123", "(212) 555-0123"),
    ("phone", "cell 415.555.0199", "415.555.0199"),
    ("phone", "London 020 7946 0958", "020 7946 0958"),
    ("phone", "Paris 06 12 34 56 78", "06 12 34 56 78"),
    ("iban", "pay GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "DE89370400440532013000", "DE89370400440532013000"),
    ("iban", "NO9386011117947", "NO9386011117947"),
    ("payment_card", "visa 4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("payment_card", "mc 5555-5555-5555-4444", "5555-5555-5555-4444"),
    ("payment_card", "amex 3782 822463 10005", "3782 822463 10005"),
    ("payment_card", "plain 4012888888881881", "4012888888881881"),
    ("us_ssn", "ssn 123-45-6789", "123-45-6789"),
    ("us_ssn", "ssn 536 22 8726", "536 22 8726"),
    ("uk_nino", "NI AB123456C", "AB123456C"),
    ("uk_nino", "ni: ce 12 34 56 d", "ce 12 34 56 d"),
]

NOT_FOUND = [
    ("email", "no domain: alice@localhost"),
    ("email", "numeric tld: a@1.2.3.4"),
    ("email", "just @mentions and a@b"),
    ("phone", "order 1234567890 shipped"),
    ("phone", "dates 2024-01-15 and 15-01-2024"),
    ("phone", "version 1.2.3.4 and ip 10.0.0.1"),
    ("phone", "price 1,299.00 and 0.5"),
    ("phone", "area code 123-555-0123 starts with 1"),
    ("iban", "bad checksum GB82 WEST 1234 5698 7654 33"),
    ("iban", "wrong length DE8937040044053201300"),
    ("iban", "unknown country XX82WEST12345698765432"),
    ("payment_card", "bad luhn 4111 1111 1111 1112"),
    ("payment_card", "too short 4111 1111 1111"),
    ("payment_card", "no issuer 9999 9999 9999 9995"),
    ("payment_card", "mixed separators 4111 1111-1111 1111"),
    ("payment_card", "uuid 123e4567-e89b-12d3-a456-426614174000"),
    ("us_ssn", "area zero 000-12-3456"),
    ("us_ssn", "area 666 666-12-3456"),
    ("us_ssn", "area 9xx 900-12-3456 and 987-65-4321"),
    ("us_ssn", "group zero 123-00-4567"),
    ("us_ssn", "serial zero 123-45-0000"),
    ("us_ssn", "no separators 123456789"),
    ("us_ssn", "mixed separators 123-45 6789"),
    ("uk_nino", "bad prefix BG123456C and GB123456A"),
    ("uk_nino", "bad first letter DA123456A and QQ123456C"),
    ("uk_nino", "bad suffix AB123456E"),
]


@pytest.mark.parametrize(("kind", "text", "match"), FOUND)
def test_detector_finds(kind: str, text: str, match: str) -> None:
    findings = {f.kind: f for f in detect(text)}
    assert kind in findings, f"{kind} not found in {text!r}"
    assert [text[a:b] for a, b in findings[kind].spans] == [match]


@pytest.mark.parametrize(("kind", "text"), NOT_FOUND)
def test_detector_ignores_near_misses(kind: str, text: str) -> None:
    assert kind not in {f.kind for f in detect(text)}


def test_clean_prose_has_no_findings() -> None:
    text = (
        "Summarise the Q3 report: revenue grew 12.5% to 4,200,000 EUR, churn fell to 3%. "
        "Ticket #48213 opened 2024-06-01T10:00:00Z, build 1.24.3, host 10.1.2.3:8080, "
        "sha 9f86d081884c7d65, order 20240601-0042, call back within 24-48 hours."
    )
    assert detect(text) == []


def test_findings_count_every_match_and_carry_no_text() -> None:
    text = "a@example.com, b@example.com; 4111 1111 1111 1111"
    findings = detect(text)
    assert [(f.kind, f.count) for f in findings] == [("email", 2), ("payment_card", 1)]
    as_json = [f.to_json() for f in findings]
    assert "example" not in repr(as_json)
    assert as_json[0] == {"kind": "email", "count": 2, "spans": [[0, 13], [15, 28]]}


def test_checks_on_their_own() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert iban_valid("gb82 west 1234 5698 7654 32")
    assert not iban_valid("GB82WEST1234569876543")
    assert IBAN_LENGTHS["DE"] == 22


def test_odd_text_never_raises() -> None:
    for text in ["", "\ufffd" * 100, "\ud800 lone surrogate", "\x00" * 50, "9" * 100_000]:
        detect(text)


class _Secret:
    kind = "api_key"

    def find(self, text: str):  # type: ignore[no-untyped-def]
        start = text.find("sk-")
        if start >= 0:
            yield start, start + 10


def test_registry_is_pluggable() -> None:
    registry = default_registry().with_detector(_Secret()).without("phone")
    assert "api_key" in registry.kinds
    assert "phone" not in registry.kinds
    found = registry.detect("key sk-abcdefgh, call +44 20 7946 0958")
    assert [f.kind for f in found] == ["api_key"]
    with pytest.raises(ValueError, match="two detectors"):
        registry.with_detector(EmailDetector())
    with pytest.raises(ValueError, match="must match"):
        DetectorRegistry([type("Bad", (), {"kind": "Bad Kind", "find": _Secret.find})()])


# The patterns as first written (look-behind first, run over the whole text): the built-in
# detectors scan only windows around digits and "@", with patterns reordered for speed, and
# must find exactly the same spans.
def _plain(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w@+.-]){pattern}(?![\w@-]|\.\w)", flags | re.ASCII)


_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])",
    re.ASCII,
)
_INTERNATIONAL = _plain(r"\+[1-9]\d{0,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}")
_NORTH_AMERICAN = _plain(r"(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[-. ])[2-9]\d{2}[-. ]\d{4}")
_TRUNK = _plain(r"0\d{1,4}(?:[ -]\d{2,4}){2,4}")
_IBAN = _plain(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?")
_CARD = _plain(r"\d{4}(?:[ -]?\d{2,6}){2,4}(?:[ -]?\d{1,4})?")
_SSN = _plain(r"(?!000|666|9\d\d)\d{3}(?P<sep>[- ])(?!00)\d{2}(?P=sep)(?!0000)\d{4}")
_NINO = _plain(
    r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]",
    re.IGNORECASE,
)


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _reference_phone(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _INTERNATIONAL.finditer(text) if 8 <= _digits(m.group()) <= 15]
    spans += [m.span() for m in _NORTH_AMERICAN.finditer(text)]
    spans += [m.span() for m in _TRUNK.finditer(text) if 10 <= _digits(m.group()) <= 11]
    kept, end = [], -1
    for start, stop in sorted(spans, key=lambda s: (s[0], -s[1])):
        if start >= end:
            kept.append((start, stop))
            end = stop
    return kept


def _reference_card(text: str) -> list[tuple[int, int]]:
    found = []
    for match in _CARD.finditer(text):
        raw = match.group()
        digits = raw.replace(" ", "").replace("-", "")
        if (" " in raw and "-" in raw) or not 13 <= len(digits) <= 19:
            continue
        if _CARD_PREFIX.match(digits) and luhn_valid(digits):
            found.append(match.span())
    return found


REFERENCE: dict[str, Callable[[str], list[tuple[int, int]]]] = {
    "email": lambda text: [m.span() for m in _EMAIL.finditer(text)],
    "phone": _reference_phone,
    "iban": lambda text: [m.span() for m in _IBAN.finditer(text) if iban_valid(m.group())],
    "payment_card": _reference_card,
    "us_ssn": lambda text: [m.span() for m in _SSN.finditer(text)],
    "uk_nino": lambda text: [m.span() for m in _NINO.finditer(text)],
}

_PIECES = [
    *"0123456789" * 4,
    *" -.+()@\n,_%",
    *"ABCDGKNTZEWSxeom",
    "ab",
    "GB",
    "ce",
    "NT",
    ".com",
    "example",
    "+44",
    "0",
    " ",
    "-",
    *(text for _, text, _ in FOUND),
    *(text for _, text in NOT_FOUND),
]


def _random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randrange(1, 120)):
        if rng.random() < 0.03:  # a long gap, so the text has several scan windows
            parts.append(rng.choice(["x", " ", "word "]) * rng.randrange(50, 400))
        else:
            parts.append(rng.choice(_PIECES))
    return "".join(parts)


def test_windowed_detectors_find_exactly_what_the_plain_patterns_find() -> None:
    rng = random.Random(20261206)
    detectors = {d.kind: d for d in DEFAULT_DETECTORS}
    texts = [text for _, text, _ in FOUND] + [text for _, text in NOT_FOUND]
    texts += [_random_text(rng) for _ in range(1500)]
    for text in texts:
        for kind, reference in REFERENCE.items():
            assert list(detectors[kind].find(text)) == reference(text), (kind, text)


def test_matches_across_seams_are_exactly_the_plain_matches_that_cross_one() -> None:
    rng = random.Random(7)
    registry = default_registry()
    for _ in range(1500):
        text = _random_text(rng)
        # A few seams (scanned near each) or many (one scan of the whole text).
        count = rng.choice([rng.randrange(0, 8), len(text) // rng.randrange(2, 20)])
        seams = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, count)))
        found = {f.kind: list(f.spans) for f in registry.detect_across(text, seams)}
        for kind, reference in REFERENCE.items():
            crossing = [
                (start, end)
                for start, end in reference(text)
                if any(start < seam < end for seam in seams)
            ]
            assert found.get(kind, []) == crossing, (kind, text, seams)


def test_a_custom_detector_is_filtered_to_matches_across_seams() -> None:
    registry = DetectorRegistry([_Secret()])
    text = "key sk-abcdefgh and more"
    assert registry.detect_across(text, [6]) == registry.detect(text)
    assert registry.detect_across(text, [2, 20]) == []
    assert registry.detect_across(text, []) == []


def test_skipped_kinds_are_not_looked_for_and_the_rest_unchanged() -> None:
    registry = default_registry()
    text = "mail a@example.com or call +44 20 7946 0958"
    everything = registry.detect(text)
    assert [f.kind for f in everything] == ["email", "phone"]
    assert registry.detect(text, skip={"email"}) == everything[1:]
    joined = "a@exam" + "ple.com"
    assert [f.kind for f in registry.detect_across(joined, [6])] == ["email"]
    assert registry.detect_across(joined, [6], skip={"email"}) == []


def test_detecting_each_text_in_one_pass_finds_what_each_alone_shows() -> None:
    texts = [
        "mail a@example.com",
        "",
        "+44 20 7946 0958 or 4111 1111 1111 1111",
        "AB 12 34 56 C and 123-45-6789",
        "a@exam",  # with the next one, an email only if they were glued (they are not)
        "ple.com GB82 WEST 1234 5698 7654 32",
        "nothing here",
    ]
    registry = default_registry()
    assert registry.detect_each(texts) == [registry.detect(text) for text in texts]
    custom = registry.with_detector(_AnyDigit())
    assert custom.detect_each(texts) == [custom.detect(text) for text in texts]


class _AnyDigit:
    kind = "digit"

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        return (m.span() for m in re.finditer(r"\d", text))
