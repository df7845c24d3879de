"""Who a request is: its tenant API key, checked against the digests the control plane
serves (:class:`~tiermesh.controlplane.api.ApiKeyEntry`), or its JWT, verified by Envoy
against a catalog issuer (:mod:`.jwt_claims`).

A key is taken from ``authorization: Bearer <key>`` or ``x-api-key: <key>`` (what
OpenAI-compatible clients send); a JWT from ``authorization: Bearer <JWT>``.
:meth:`KeyTable.authenticate` answers with:

- :class:`Authenticated` (kind, credential id and tenant): the request is that tenant,
  whatever its ``x-tiermesh-tenant`` says;
- :class:`Refused` (``no credential``, ``malformed API key``, ``unknown API key``,
  ``revoked API key``, ``conflicting credentials``, or a JWT's problem: ``expired JWT``,
  ``JWT signature invalid`` …): answered 401, recorded, never routed;
- None: no credential was presented and authentication is not required, so the request
  is decided on its ``x-tiermesh-tenant`` header as before credentials existed.

A presented key and a presented JWT are both checked: either refused refuses the request,
and two valid ones naming different tenants are ``conflicting credentials`` (naming the
same tenant, the JWT is the one recorded).

The switch (``required``) is the request setting ``require_credential`` or its older name
``require_api_key`` (:data:`~tiermesh.controlplane.api.request_policy.
REQUIRE_CREDENTIAL_SETTING`; either ``true`` requires a valid credential of either kind),
not the mere presence of keys: an operator creates keys and hands them out first, then
turns the setting on with a bundle push, and no tenant is locked out between the two. A
presented tiermesh key (``tmk_…``) or JWT is checked in both modes; other bearer tokens (a
dummy ``sk-…`` an OpenAI client sends by default) are ignored unless credentials are
required.

Digests are compared with :func:`hmac.compare_digest`. Immutable; thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from tiermesh.agents.authz.jwt_claims import (
    NO_ISSUERS,
    JwtTrust,
    RefusedJwt,
    VerifiedJwt,
    verify_jwt,
)
from tiermesh.controlplane.api import (
    API_KEY_PREFIX,
    ApiKeyEntry,
    Catalog,
    parse_api_key,
    verify_digest,
)
from tiermesh.controlplane.api.request_policy import (
    REQUIRE_API_KEY_SETTING,
    REQUIRE_CREDENTIAL_SETTING,
)

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


CredentialKind = Literal["api_key", "jwt"]
_NO_METADATA: Final[Mapping[str, Any]] = MappingProxyType({})


def _presented_json(
    kind: CredentialKind, credential_id: str | None, issuer: str | None
) -> dict[str, str] | None:
    if credential_id is None:
        return None
    shown = {"kind": kind, "id": credential_id}
    if issuer is not None:
        shown["issuer"] = issuer
    return shown


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A valid credential: the request is ``tenant``. ``key_id`` is the key's id, or for a
    JWT its issuer and subject (:mod:`.jwt_claims`); ``issuer`` the JWT issuer's catalog
    name."""

    key_id: str
    tenant: str
    kind: CredentialKind = "api_key"
    issuer: str | None = None

    def to_json(self) -> dict[str, str]:
        """``input.credential`` of the policy input (never the key or token)."""
        shown = _presented_json(self.kind, self.key_id, self.issuer)
        assert shown is not None
        return shown


@dataclass(frozen=True, slots=True)
class Refused:
    """No valid credential; ``problem`` is what the 401 answer and the record say.
    ``key_id`` is the presented credential's id when it had one (a key's id; a JWT's when
    Envoy verified it and its claims are the problem)."""

    problem: str
    key_id: str | None = None
    kind: CredentialKind = "api_key"
    issuer: str | None = None

    def to_json(self) -> dict[str, str] | None:
        return _presented_json(self.kind, self.key_id, self.issuer)


def _presented(headers: Mapping[str, str]) -> list[str]:
    tokens: list[str] = []
    authorization = headers.get("authorization", "").strip()
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        tokens.append(value.strip())
    if api_key := headers.get("x-api-key", "").strip():
        tokens.append(api_key)
    return tokens


def _from_jwt(result: VerifiedJwt | RefusedJwt | None) -> Authenticated | Refused | None:
    if isinstance(result, VerifiedJwt):
        return Authenticated(result.credential_id, result.tenant, "jwt", result.issuer)
    if isinstance(result, RefusedJwt):
        return Refused(result.problem, result.credential_id, "jwt", result.issuer)
    return None


def _combined(
    key: Authenticated | Refused | None,
    token: Authenticated | Refused | None,
    required: bool,
    *,
    presented: bool,
) -> Authenticated | Refused | None:
    """One answer from the key's and the JWT's (module doc)."""
    if isinstance(key, Refused):
        return key
    if isinstance(token, Refused):
        return token
    if key is not None and token is not None and key.tenant != token.tenant:
        return Refused("conflicting credentials", token.key_id, "jwt", token.issuer)
    found = token or key
    if found is None and required:
        return Refused("malformed API key" if presented else "no credential")
    return found


class KeyTable:
    """The served keys by id, the JWT issuers a token may come from, and whether a
    credential is required (module doc)."""

    __slots__ = ("_entries", "jwt", "required")

    def __init__(
        self,
        entries: Iterable[ApiKeyEntry] = (),
        *,
        required: bool = False,
        jwt: JwtTrust = NO_ISSUERS,
    ) -> None:
        self._entries: Mapping[str, ApiKeyEntry] = MappingProxyType({e.id: e for e in entries})
        self.required = required
        self.jwt = jwt

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(
        self, headers: Mapping[str, str], jwt_metadata: Mapping[str, Any] = _NO_METADATA
    ) -> Authenticated | Refused | None:
        """Check the request's key and JWT (module doc). ``headers`` have lower-case names;
        ``jwt_metadata`` is what Envoy's ``jwt_authn`` filter left for the check."""
        token = _from_jwt(verify_jwt(self.jwt, jwt_metadata, headers))
        presented = _presented(headers)
        ours = [t for t in presented if t.startswith(API_KEY_PREFIX)]
        key = self._check(ours[0]) if len(set(ours)) == 1 else None
        if len(set(ours)) > 1:
            key = Refused("conflicting credentials")
        return _combined(key, token, self.required, presented=bool(presented))

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
    entries: Iterable[ApiKeyEntry] | None,
    request_config: Mapping[str, object],
    catalog: Catalog | None = None,
) -> KeyTable:
    """The table for a served policy: its ``entries`` (None: the control plane serves no
    keys), ``required`` from the node's merged ``data.request_config``
    (:data:`REQUIRE_CREDENTIAL_SETTING` or :data:`REQUIRE_API_KEY_SETTING` is ``true``) and
    the JWT issuers of ``catalog`` (None: no JWT is accepted)."""
    required = any(
        request_config.get(name) is True
        for name in (REQUIRE_CREDENTIAL_SETTING, REQUIRE_API_KEY_SETTING)
    )
    return KeyTable(entries or (), required=required, jwt=JwtTrust.of(catalog))
