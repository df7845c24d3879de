"""One-time join tokens: how a new node proves it is the node an operator meant.

A token is 32 random bytes, URL-safe base64 (43 characters). The store holds only its
SHA-256 (key ``tokens/<sha256-hex>``) with the node id and expiry, so someone who reads the
store cannot join as anyone. Consuming a token is a compare-and-delete, so of any number of
concurrent consumers (in any number of control-plane replicas) exactly one gets the node id.

Errors (all :class:`JoinTokenError`, an ``IdentityError``): :class:`TokenReusedOrUnknown`
(never issued, already consumed, or purged — indistinguishable once deleted),
:class:`TokenExpired` (the record is deleted as it is reported), :class:`MalformedToken`.
Store errors (``StoreUnavailable`` …) pass through unchanged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from typing import Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from tiermesh.controlplane.identity.ca import Clock, utc_now
from tiermesh.controlplane.identity.errors import IdentityError
from tiermesh.controlplane.identity.spiffe_id import validate_node_id
from tiermesh.controlplane.store import Store

__all__ = [
    "MAX_TOKEN_TTL",
    "TOKEN_PREFIX",
    "JoinTokenError",
    "JoinTokens",
    "MalformedToken",
    "TokenExpired",
    "TokenReusedOrUnknown",
    "token_key",
]

TOKEN_PREFIX: Final = "tokens/"  # noqa: S105 - a key prefix, not a secret
"""Store prefix (relative to the store root) of join token records."""

MAX_TOKEN_TTL: Final = dt.timedelta(days=7)
"""Longest lifetime a join token may be given."""

_TOKEN_BYTES = 32
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,128}")


class JoinTokenError(IdentityError):
    """A join token cannot be used; nothing was consumed on its behalf."""


class MalformedToken(JoinTokenError):
    """The string cannot be a join token (length or characters)."""

    def __init__(self) -> None:
        super().__init__("malformed join token")


class TokenReusedOrUnknown(JoinTokenError):
    """No live record for the token: never issued, already used, or purged."""

    def __init__(self) -> None:
        super().__init__("join token unknown or already used")


class TokenExpired(JoinTokenError):
    """The token was valid once but its lifetime is over; its record is now deleted."""

    def __init__(self, node_id: str, expired_at: dt.datetime) -> None:
        self.node_id = node_id
        self.expired_at = expired_at
        super().__init__(f"join token for node {node_id!r} expired at {expired_at.isoformat()}")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str
    expires_at: AwareDatetime


def token_key(token: str) -> str:
    """The store key (relative to the root) of ``token``'s record: ``tokens/<sha256-hex>``."""
    return TOKEN_PREFIX + hashlib.sha256(token.encode()).hexdigest()


class JoinTokens:
    """Creates and consumes join tokens kept in a :class:`Store`.

    Task safety: as the store's (any task of the store's event loop). ``clock`` decides
    expiry; it must return timezone-aware datetimes.
    """

    def __init__(self, store: Store, *, clock: Clock = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def create(self, node_id: str, ttl: dt.timedelta) -> str:
        """A new token that joins ``node_id`` if used within ``ttl``. Returned once; only
        its hash is stored.

        Raises:
            InvalidNodeIdError: ``node_id`` breaks the node id rule.
            ValueError: ``ttl`` is not within ``(0, MAX_TOKEN_TTL]``.
            StoreError: from the store.
        """
        validate_node_id(node_id)
        if ttl <= dt.timedelta(0) or ttl > MAX_TOKEN_TTL:
            raise ValueError(f"token TTL {ttl} is not within (0, {MAX_TOKEN_TTL}]")
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        record = _Record(node_id=node_id, expires_at=self._now() + ttl)
        # A collision of 256 random bits does not happen; put_if_absent makes it loud if it did.
        await self._store.put_if_absent(token_key(token), record.model_dump_json().encode())
        return token

    async def peek(self, token: str) -> str:
        """The node id ``token`` would join, without consuming it (to check a CSR first).

        Raises:
            MalformedToken, TokenReusedOrUnknown, TokenExpired (the record is deleted).
        """
        _, _, record = await self._lookup(token)
        return record.node_id

    async def consume(self, token: str) -> str:
        """Use ``token`` up and return its node id. Exactly one caller ever succeeds.

        Raises:
            MalformedToken, TokenReusedOrUnknown (also when a concurrent caller won),
            TokenExpired (the record is deleted).
        """
        key, raw, record = await self._lookup(token)
        if not await self._store.delete_if_value(key, raw):
            raise TokenReusedOrUnknown()
        return record.node_id

    async def purge_expired(self) -> int:
        """Delete every expired token record; returns how many this call deleted."""
        snapshot = await self._store.read_prefix(TOKEN_PREFIX)
        now = self._now()
        purged = 0
        for entry in snapshot.entries:
            record = _parse(entry.value)
            if (record is None or record.expires_at <= now) and await self._store.delete_if_value(
                entry.key, entry.value
            ):
                purged += 1
        return purged

    async def _lookup(self, token: str) -> tuple[str, bytes, _Record]:
        if not isinstance(token, str) or _TOKEN_SHAPE.fullmatch(token) is None:
            raise MalformedToken()
        key = token_key(token)
        entry = await self._store.get(key)
        if entry is None:
            raise TokenReusedOrUnknown()
        record = _parse(entry.value)
        if record is None:
            # Not something this class wrote: treat as absent, never as a grant.
            raise TokenReusedOrUnknown()
        if record.expires_at <= self._now():
            await self._store.delete_if_value(key, entry.value)
            raise TokenExpired(record.node_id, record.expires_at)
        return key, entry.value, record

    def _now(self) -> dt.datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return timezone-aware datetimes")
        return now


def _parse(value: bytes) -> _Record | None:
    try:
        return _Record.model_validate_json(value)
    except ValidationError:
        return None
