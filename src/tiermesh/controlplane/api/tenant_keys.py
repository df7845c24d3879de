"""Tenant API keys: how a request proves which tenant it is (DESIGN.md, trust boundaries).

A key reads ``tmk_<id>_<secret>``: ``<id>`` is 16 lower-case hex characters (public; it
names the key in ``tiermesh key list``, in decision records and in the store), ``<secret>``
43 URL-safe base64 characters (32 random bytes). The key is shown once, at creation; the
store and every node hold only :func:`key_digest`: SHA-256 of ``<id>:<secret>``.

Why a fast hash and no salt or key stretching: the secret is 256 random bits, not a
password a person chose, so neither a dictionary nor a brute-force search of the digest is
feasible, and the id (unique per key) already binds each digest to one key. A fast hash
keeps verification on the request path in microseconds. Digests are compared with
:func:`hmac.compare_digest` (constant time).

The control plane serves the digests to nodes inside the request policy
(:class:`ApiKeyEntry`, ``RequestPolicyBundle.api_keys``). Pure and dependency-free.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import Field, StringConstraints

from tiermesh.controlplane.api._base import Contract, Name

__all__ = [
    "API_KEY_PREFIX",
    "MAX_API_KEYS",
    "ApiKeyEntry",
    "ParsedKey",
    "key_digest",
    "new_api_key",
    "parse_api_key",
    "verify_digest",
]

API_KEY_PREFIX: Final = "tmk_"
"""What every tenant API key starts with (so a leaked one is recognisable)."""
MAX_API_KEYS: Final = 4096
"""Most keys (revoked ones included) one request policy may carry."""

_ID_BYTES: Final = 8
_SECRET_BYTES: Final = 32
_KEY_SHAPE: Final = re.compile(r"tmk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")

KeyId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
"""A key's public id: 16 lower-case hex characters."""
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key split into its public id and its secret. ``repr`` never shows the secret."""

    key_id: str
    secret: str

    def __repr__(self) -> str:
        return f"ParsedKey(key_id={self.key_id!r}, secret=...)"

    @property
    def digest(self) -> str:
        """:func:`key_digest` of this key."""
        return key_digest(self.key_id, self.secret)


def key_digest(key_id: str, secret: str) -> str:
    """SHA-256 (hex) of ``<key_id>:<secret>``: what the store and the nodes keep."""
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


def parse_api_key(text: str) -> ParsedKey | None:
    """``text`` as a key, or None when it cannot be one (wrong prefix, length, characters)."""
    match = _KEY_SHAPE.fullmatch(text.strip())
    return None if match is None else ParsedKey(match.group(1), match.group(2))


def new_api_key() -> tuple[str, ParsedKey]:
    """A fresh random key: the text to hand out once, and its parts."""
    parsed = ParsedKey(secrets.token_hex(_ID_BYTES), secrets.token_urlsafe(_SECRET_BYTES))
    return f"{API_KEY_PREFIX}{parsed.key_id}_{parsed.secret}", parsed


def verify_digest(key: ParsedKey, expected_sha256: str) -> bool:
    """Whether ``key`` hashes to ``expected_sha256``, compared in constant time."""
    return hmac.compare_digest(key.digest.encode(), expected_sha256.encode())


class ApiKeyEntry(Contract):
    """One tenant API key as nodes see it: never the key, only its digest."""

    id: KeyId
    """The key's public id (the ``<id>`` in ``tmk_<id>_<secret>``)."""
    tenant: Name
    """The tenant a request bearing the key is, whatever its ``x-tiermesh-tenant`` says."""
    sha256: Sha256Hex
    """:func:`key_digest` of the key."""
    revoked: bool = False
    """A revoked key is refused (401 ``revoked API key``) but stays listed so the answer
    can say so."""


ApiKeyEntries = Annotated[tuple[ApiKeyEntry, ...], Field(max_length=MAX_API_KEYS)]
