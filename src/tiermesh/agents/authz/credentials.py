"""Who a request is: its tenant API key, checked against the digests the control plane
serves (:class:`~tiermesh.controlplane.api.ApiKeyEntry`).

A key is taken from ``authorization: Bearer <key>`` or ``x-api-key: <key>`` (what
OpenAI-compatible clients send). :meth:`KeyTable.authenticate` answers with:

- :class:`Authenticated` (key id and tenant): the request is that tenant, whatever its
  ``x-tiermesh-tenant`` says;
- :class:`Refused` (``no credential``, ``malformed API key``, ``unknown API key``,
  ``revoked API key``, ``conflicting credentials``): answered 401, recorded, never routed;
- None: no tiermesh key was presented and authentication is not required, so the request
  is decided on its ``x-tiermesh-tenant`` header as before keys existed.

The switch (``required``) is the request setting ``require_api_key``
(:data:`~tiermesh.controlplane.api.request_policy.REQUIRE_API_KEY_SETTING`), not the mere
presence of keys: an operator creates keys and hands them out first, then turns the
setting on with a bundle push, and no tenant is locked out between the two. A presented
tiermesh key (``tmk_…``) is checked in both modes; other bearer tokens (a dummy
``sk-…`` an OpenAI client sends by default) are ignored unless keys are required.

Digests are compared with :func:`hmac.compare_digest`. Immutable; thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from tiermesh.controlplane.api import API_KEY_PREFIX, ApiKeyEntry, parse_api_key, verify_digest
from tiermesh.controlplane.api.request_policy import REQUIRE_API_KEY_SETTING

__all__ = [
    "CREDENTIAL_HEADERS",
    "NO_KEYS",
    "Authenticated",
    "KeyTable",
    "Refused",
    "key_table",
]

CREDENTIAL_HEADERS: Final = ("authorization", "x-api-key")
"""Request headers a tenant key may come in; removed before the request goes upstream
when they carried one."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A valid key: the request is ``tenant``."""

    key_id: str
    tenant: str

    def to_json(self) -> dict[str, str]:
        """``input.credential`` of the policy input (never the key)."""
        return {"kind": "api_key", "id": self.key_id}


@dataclass(frozen=True, slots=True)
class Refused:
    """No valid key; ``problem`` is what the 401 answer and the record say. ``key_id`` is
    the presented key's id when it had one."""

    problem: str
    key_id: str | None = None

    def to_json(self) -> dict[str, str] | None:
        return None if self.key_id is None else {"kind": "api_key", "id": self.key_id}


def _presented(headers: Mapping[str, str]) -> list[str]:
    tokens: list[str] = []
    authorization = headers.get("authorization", "").strip()
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        tokens.append(value.strip())
    if api_key := headers.get("x-api-key", "").strip():
        tokens.append(api_key)
    return tokens


class KeyTable:
    """The served keys by id, and whether a key is required (module doc)."""

    __slots__ = ("_entries", "required")

    def __init__(self, entries: Iterable[ApiKeyEntry] = (), *, required: bool = False) -> None:
        self._entries: Mapping[str, ApiKeyEntry] = MappingProxyType({e.id: e for e in entries})
        self.required = required

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, headers: Mapping[str, str]) -> Authenticated | Refused | None:
        """Check the request's key (module doc). ``headers`` have lower-case names."""
        presented = _presented(headers)
        ours = [t for t in presented if t.startswith(API_KEY_PREFIX)]
        if not ours:
            if not self.required:
                return None
            return Refused("malformed API key" if presented else "no credential")
        if len(set(ours)) > 1:
            return Refused("conflicting credentials")
        return self._check(ours[0])

    def _check(self, text: str) -> Authenticated | Refused:
        key = parse_api_key(text)
        if key is None:
            return Refused("malformed API key")
        entry = self._entries.get(key.key_id)
        # Unknown ids are refused without hashing; known ones are compared in constant time.
        if entry is None or not verify_digest(key, entry.sha256):
            return Refused("unknown API key", key.key_id)
        if entry.revoked:
            return Refused("revoked API key", key.key_id)
        return Authenticated(key.key_id, entry.tenant)


NO_KEYS: Final = KeyTable()
"""No key served and none required: every request is decided on its headers."""


def key_table(
    entries: Iterable[ApiKeyEntry] | None, request_config: Mapping[str, object]
) -> KeyTable:
    """The table for a served policy: its ``entries`` (None: the control plane serves no
    keys) and ``required`` from the node's merged ``data.request_config``
    (:data:`REQUIRE_API_KEY_SETTING` is ``true``)."""
    required = request_config.get(REQUIRE_API_KEY_SETTING) is True
    return KeyTable(entries or (), required=required)
