"""Masking: no prompt text by default; configurable erase/hash rules."""

from __future__ import annotations

import hashlib
import json

import pytest

from tiermesh.agents.decisionlog import Masking, MaskingError, MaskRule, hash_value

PROMPT = "my SSN is 123-45-6789, summarise my medical record"


def request_input() -> dict[str, object]:
    return {
        "tenant": "acme",
        "body": json.dumps({"messages": [{"role": "user", "content": PROMPT}]}),
        "messages": [{"role": "user", "content": PROMPT}],
        "prompt": PROMPT,
        "request": {"body": PROMPT, "messages": [PROMPT], "headers": {"x-tiermesh-tenant": "acme"}},
        "findings": [{"detector": "ssn", "count": 1}],
        "token_estimate": 42,
    }


def test_default_rules_keep_no_prompt_text_but_findings_and_a_body_hash() -> None:
    original = request_input()
    masked = Masking().apply(original)
    assert PROMPT not in json.dumps(masked)
    assert "123-45-6789" not in json.dumps(masked)
    body = original["body"]
    assert isinstance(body, str)
    assert masked["body"] == "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    assert masked["request"]["body"] == hash_value(PROMPT)
    assert masked["findings"] == [{"detector": "ssn", "count": 1}]
    assert masked["token_estimate"] == 42
    assert masked["request"]["headers"] == {"x-tiermesh-tenant": "acme"}
    assert "messages" not in masked
    assert "prompt" not in masked
    assert original["prompt"] == PROMPT  # the caller's input is untouched


def test_custom_rules_with_wildcards_and_indexes() -> None:
    masking = Masking.from_strings(
        ["erase:/messages/*/content", "hash:/user~1id", "erase:/list/0", "hash:/missing/x"]
    )
    masked = masking.apply(
        {
            "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            "user/id": "alice",
            "list": [1, 2],
        }
    )
    assert masked == {
        "messages": [{"role": "user"}, {"role": "system"}],
        "user/id": hash_value("alice"),
        "list": [2],
    }
    assert Masking([]).apply({"body": "x"}) == {"body": "x"}


@pytest.mark.parametrize("text", ["erase", "wipe:/a", "hash:a", "erase:/"])
def test_malformed_rules_are_refused(text: str) -> None:
    with pytest.raises(MaskingError):
        MaskRule.parse(text)


def test_masking_copies_only_what_it_changes() -> None:
    original = request_input()
    snapshot = json.dumps(original, sort_keys=True)
    masked = Masking.from_strings(["erase:/messages/*/content", "hash:/request/body"]).apply(
        original
    )
    assert json.dumps(original, sort_keys=True) == snapshot  # nested places untouched too
    assert masked["messages"] == [{"role": "user"}]
    assert masked["request"]["body"] == hash_value(PROMPT)
    assert masked["findings"] is original["findings"]  # no rule below: shared, not copied
    untouched = {"tenant": "acme", "findings": []}
    assert Masking().apply(untouched) is untouched
