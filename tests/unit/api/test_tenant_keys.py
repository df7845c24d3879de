"""Tenant API keys: their shape, digest and constant-time check."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from tiermesh.controlplane.api import (
    API_KEY_PREFIX,
    ApiKeyEntry,
    RequestPolicyBundle,
    key_digest,
    new_api_key,
    parse_api_key,
    verify_digest,
)


def test_a_new_key_parses_back_to_its_id_and_secret() -> None:
    text, parsed = new_api_key()

    assert text.startswith(API_KEY_PREFIX)
    assert parse_api_key(text) == parsed
    assert parse_api_key(f"  {text}\n") == parsed
    assert len(parsed.key_id) == 16
    assert len(parsed.secret) == 43
    assert new_api_key()[1].key_id != parsed.key_id


def test_the_digest_is_sha256_of_id_and_secret() -> None:
    _, parsed = new_api_key()
    expected = hashlib.sha256(f"{parsed.key_id}:{parsed.secret}".encode()).hexdigest()

    assert parsed.digest == key_digest(parsed.key_id, parsed.secret) == expected
    assert verify_digest(parsed, expected)
    assert not verify_digest(parsed, "0" * 64)
    assert not verify_digest(parsed, "")


def test_the_secret_never_shows_in_repr() -> None:
    _, parsed = new_api_key()
    assert parsed.secret not in repr(parsed)
    assert parsed.key_id in repr(parsed)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tmk_",
        "sk-abcdef",
        "tmk_0123456789abcdef",
        "tmk_0123456789ABCDEF_" + "a" * 43,
        "tmk_0123456789abcdef_" + "a" * 42,
        "tmk_0123456789abcdef_" + "a" * 44,
        "tmk_0123456789abcdef_" + "a" * 42 + "=",
        "xyz_0123456789abcdef_" + "a" * 43,
    ],
)
def test_malformed_keys_do_not_parse(text: str) -> None:
    assert parse_api_key(text) is None


def test_entries_carry_only_a_digest_and_are_validated() -> None:
    entry = ApiKeyEntry(id="0123456789abcdef", tenant="acme", sha256="ab" * 32)
    assert entry.revoked is False
    with pytest.raises(ValidationError):
        ApiKeyEntry(id="0123456789abcdef", tenant="acme", sha256="ab" * 32, key="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ApiKeyEntry(id="short", tenant="acme", sha256="ab" * 32)
    with pytest.raises(ValidationError):
        ApiKeyEntry(id="0123456789abcdef", tenant="Acme Corp", sha256="ab" * 32)


def test_a_policy_without_keys_leaves_the_field_unset() -> None:
    fields = RequestPolicyBundle.model_fields
    assert fields["api_keys"].default is None
