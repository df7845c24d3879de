"""Text hidden from pattern matching but read by a model: base64 runs and bracketed
``[at]`` / ``(dot)`` addresses, in bodies and outside them."""

from __future__ import annotations

import base64
import json

import pytest

from tiermesh.agents.authz import inspect_body
from tiermesh.agents.authz.floor import inspect_request
from tiermesh.agents.authz.normalize import hidden_forms


def kinds(text: str) -> set[str]:
    body = json.dumps({"messages": [{"role": "user", "content": text}]}).encode()
    inspected = inspect_body(body, max_bytes=65536, declared_length=len(body))
    return {finding.kind for finding in inspected.findings}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("decode: " + base64.b64encode(b"mail jane.doe@example.com").decode(), "email"),
        ("b64 " + base64.b64encode(b"card 4111 1111 1111 1111").decode(), "payment_card"),
        ("u " + base64.urlsafe_b64encode(b"ssn 078-05-1120 ok").decode().rstrip("="), "us_ssn"),
        ("write to jane.doe [at] example [dot] com", "email"),
        ("jane.doe(at)example(dot)com", "email"),
        ("jane.doe {AT} example.com", "email"),
    ],
)
def test_hidden_personal_data_in_a_body_is_found(text: str, kind: str) -> None:
    assert kind in kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        "internationalization considerations are important for everyone",
        "Look at the (dot) product of two vectors",
        "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 4).decode(),
        "sha256:" + "ab" * 32,
    ],
)
def test_ordinary_text_gains_no_finding(text: str) -> None:
    assert kinds(text) == set()


def test_nothing_hidden_gives_no_form() -> None:
    assert hidden_forms("just a plain sentence about nothing in particular") == []


def test_a_base64_header_value_and_a_header_name_are_read() -> None:
    encoded = base64.b64encode(b"jane.doe@example.com").decode()
    assert {f.where for f in inspect_request("/v1/models", {"x-ref": encoded})} == {"header x-ref"}
    found = inspect_request("/v1/models", {"x-jane.doe@example.com": "1"})
    assert {f.where for f in found} == {"header [masked]"}, "the name is not recorded"


@pytest.mark.parametrize(
    "text", ["card 4111.1111.1111.1111", "card 4111/1111/1111/1111", "pay 5500-0000-0000-0004"]
)
def test_a_card_written_with_dots_or_slashes_is_found(text: str) -> None:
    assert kinds(text) == {"payment_card"}


@pytest.mark.parametrize("text", ["v 4111.1111-1111 1111", "hosts 192.168.100.200 10.0.0.1"])
def test_mixed_separators_and_addresses_are_no_card(text: str) -> None:
    assert "payment_card" not in kinds(text)
