"""Value encodings shared by every `Store` (registrations, usage counters, API keys)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from tiermesh.controlplane.store.errors import StoreRequestFailed
from tiermesh.controlplane.store.models import ApiKeyRecord, Usage

__all__ = [
    "check_increments",
    "decode_api_key",
    "decode_usage",
    "encode_api_key",
    "encode_usage",
    "registration_bytes",
]


def registration_bytes(registration: bytes | BaseModel) -> bytes:
    """The JSON bytes stored for a registration; ValueError if ``bytes`` are not JSON."""
    if isinstance(registration, BaseModel):
        return registration.model_dump_json().encode()
    raw = bytes(registration)
    try:
        json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"registration is not JSON: {exc}") from exc
    return raw


def encode_usage(tokens: int, cost_micro: int) -> bytes:
    return json.dumps({"cost_micro": cost_micro, "tokens": tokens}, sort_keys=True).encode()


def decode_usage(tenant: str, raw: bytes | None, revision: int) -> Usage:
    """Parse a stored counter value (None: never written)."""
    if raw is None:
        return Usage(tenant, 0, 0, revision)
    try:
        doc: Any = json.loads(raw)
        return Usage(tenant, int(doc["tokens"]), int(doc["cost_micro"]), revision)
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreRequestFailed(
            "get_usage", f"counter of {tenant!r} is unreadable: {exc}"
        ) from exc


def check_increments(tokens: int, cost_micro: int) -> None:
    """ValueError unless both increments are non-negative integers."""
    if tokens < 0 or cost_micro < 0:
        raise ValueError(f"usage increments must be >= 0, got {tokens=} {cost_micro=}")


def encode_api_key(record: ApiKeyRecord) -> bytes:
    return json.dumps(
        {
            "created_at": record.created_at,
            "revoked_at": record.revoked_at,
            "sha256": record.sha256,
            "tenant": record.tenant,
        },
        sort_keys=True,
    ).encode()


def decode_api_key(key_id: str, raw: bytes, revision: int) -> ApiKeyRecord:
    """Parse a stored API key record."""
    try:
        doc: Any = json.loads(raw)
        revoked = doc.get("revoked_at")
        return ApiKeyRecord(
            key_id,
            str(doc["tenant"]),
            str(doc["sha256"]),
            str(doc["created_at"]),
            None if revoked is None else str(revoked),
            revision,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreRequestFailed("api_keys", f"key {key_id!r} is unreadable: {exc}") from exc
