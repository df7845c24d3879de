"""PII detectors as tables: what each must find, and near-misses it must not."""

from __future__ import annotations

import pytest

from tiermesh.agents.authz import DetectorRegistry, default_registry, detect
from tiermesh.agents.authz.detectors import (
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
