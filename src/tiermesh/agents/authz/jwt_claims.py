"""Who a request's JWT says it is, from what Envoy's ``jwt_authn`` filter verified.

Envoy checks the token (signature against the issuer's key set, ``iss``, ``aud``, ``exp``,
``nbf``) and leaves its verdict in the request's dynamic metadata, which the check request
carries (:mod:`tiermesh.controlplane.api.tenant_jwt`). This module never verifies a
signature itself and never trusts a token Envoy did not verify: :func:`verify_jwt` reads
that verdict and answers with

- :class:`VerifiedJwt` — the tenant the token's ``tenant_claim`` names (a catalog tenant
  the issuer may name), the issuer's catalog name, and an id for the audit (``<iss>#<sub>``
  or ``<iss>#jti:<jti>``; a subject that is not a plain token, an e-mail address say, is
  recorded as ``sha256:<first 16 hex digits>`` of it; never the token);
- :class:`RefusedJwt` — the problem (``expired JWT``, ``JWT signature invalid``,
  ``JWT issuer not accepted`` …), answered 401 and recorded;
- None — no JWT was presented: no ``authorization: Bearer`` value shaped like a JWT
  (three dot-separated parts), or the bearer value is a tenant API key (``tmk_…``), whose
  failed JWT parse is not a JWT failure.

A bearer value shaped like a JWT on a node whose catalog names no issuer is no JWT either
(it is handled like any other unknown bearer value); where issuers are named, one that
Envoy left no verdict for is refused (``unverified JWT``). Immutable; thread-safe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from tiermesh.controlplane.api import API_KEY_PREFIX, Catalog, JwtIssuer
from tiermesh.controlplane.api.tenant_jwt import (
    JWT_FAILURE_PREFIX,
    JWT_PAYLOAD_PREFIX,
    MISSING_MESSAGE,
    UNKNOWN_ISSUER_MESSAGE,
)

__all__ = ["NO_ISSUERS", "JwtTrust", "RefusedJwt", "VerifiedJwt", "bearer_token", "verify_jwt"]

_PLAIN_SUBJECT: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_MESSAGE: Final = 120

# Envoy's refusal messages (jwt_verify_lib), by a fragment, and what tiermesh calls them.
_PROBLEMS: Final = (
    ("expired", "expired JWT"),
    ("not yet valid", "JWT not yet valid"),
    ("expiration", "JWT without expiry"),
    ("audiences", "JWT audience not accepted"),
    ("verification fail", "JWT signature invalid"),
    ("kid or alg", "JWT signed by an unknown key"),
    ("fetch", "JWKS unavailable"),
    ("alg", "JWT algorithm not accepted"),
    ("multiple", "conflicting credentials"),
    ("base64", "malformed JWT"),
    ("json", "malformed JWT"),
    ("form of header.payload.signature", "malformed JWT"),
    ("must be", "malformed JWT"),
)


@dataclass(frozen=True, slots=True)
class JwtTrust:
    """The catalog's JWT issuers (by name) and its tenants: what a token may name."""

    issuers: Mapping[str, JwtIssuer]
    tenants: frozenset[str]

    @classmethod
    def of(cls, catalog: Catalog | None) -> JwtTrust:
        """The trust of ``catalog`` (None: no issuer, so no JWT is accepted)."""
        if catalog is None or not catalog.jwt_issuers:
            return NO_ISSUERS
        return cls(
            MappingProxyType({issuer.name: issuer for issuer in catalog.jwt_issuers}),
            frozenset(tenant.name for tenant in catalog.tenants),
        )

    def __bool__(self) -> bool:
        return bool(self.issuers)


NO_ISSUERS: Final = JwtTrust(MappingProxyType({}), frozenset())
"""No issuer named: no JWT authenticates anyone."""


@dataclass(frozen=True, slots=True)
class VerifiedJwt:
    """A token Envoy verified, naming ``tenant``; ``credential_id`` is what the audit keeps."""

    tenant: str
    credential_id: str
    issuer: str


@dataclass(frozen=True, slots=True)
class RefusedJwt:
    """A token that does not authenticate anyone: ``problem`` is what the 401 says.
    ``issuer`` and ``credential_id`` are known when Envoy verified it (its claims are the
    problem)."""

    problem: str
    issuer: str | None = None
    credential_id: str | None = None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The value of ``authorization: Bearer <value>`` (None without one)."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def _jwt_shaped(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(API_KEY_PREFIX)


def _entries(metadata: Mapping[str, Any], prefix: str) -> dict[str, Mapping[str, Any]]:
    return {
        key[len(prefix) :]: value
        for key, value in sorted(metadata.items())
        if key.startswith(prefix) and isinstance(value, Mapping)
    }


def _not_this_token(failure: Mapping[str, Any]) -> bool:
    """Is ``failure`` a provider's ``not my issuer`` (or ``no token``), not a verdict on the
    token?"""
    return failure.get("message") in {UNKNOWN_ISSUER_MESSAGE, MISSING_MESSAGE}


def _unverified_part(token: str, index: int) -> dict[str, Any]:
    """Part ``index`` (0 header, 1 claims) of ``token``, decoded but NOT verified: only for
    naming a problem, never for deciding who the request is. Empty when unreadable."""
    parts = token.split(".")
    if len(parts) <= index:
        return {}
    text = parts[index]
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return value if isinstance(value, dict) else {}


def _problem(failures: Mapping[str, Mapping[str, Any]], token: str) -> str:
    """The problem of a token every provider refused."""
    if str(_unverified_part(token, 0).get("alg", "")).lower() == "none":
        return "unsigned JWT (alg none)"
    relevant = [f for f in failures.values() if not _not_this_token(f)]
    if not relevant:
        # Every issuer disowned it, or Envoy did not read it (an odd spelling of Bearer).
        owners = [f for f in failures.values() if f.get("message") == UNKNOWN_ISSUER_MESSAGE]
        return "JWT issuer not accepted" if owners else "unverified JWT"
    message = str(relevant[0].get("message", ""))
    lowered = message.lower()
    if "verification fail" in lowered and "exp" not in _unverified_part(token, 1):
        return "JWT without expiry"
    for fragment, problem in _PROBLEMS:
        if fragment in lowered:
            return problem
    shown = "".join(c for c in message if c.isprintable())[:_MAX_MESSAGE]
    return f"invalid JWT ({shown})" if shown else "invalid JWT"


def _claim(claims: Mapping[str, Any], path: tuple[str, ...]) -> object:
    value: object = claims
    for name in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _subject(value: str) -> str:
    if _PLAIN_SUBJECT.fullmatch(value):
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _credential_id(claims: Mapping[str, Any]) -> str | None:
    iss = claims.get("iss")
    sub, jti = claims.get("sub"), claims.get("jti")
    if not isinstance(iss, str):
        return None
    if isinstance(sub, str) and sub:
        return f"{iss}#{_subject(sub)}"
    if isinstance(jti, str) and jti:
        return f"{iss}#jti:{_subject(jti)}"
    return None


def _verified(trust: JwtTrust, name: str, claims: Mapping[str, Any]) -> VerifiedJwt | RefusedJwt:
    issuer = trust.issuers.get(name)
    if issuer is None or claims.get("iss") != issuer.issuer:
        return RefusedJwt("JWT issuer not accepted")
    credential_id = _credential_id(claims)
    if credential_id is None:
        return RefusedJwt("JWT names no subject (sub or jti)", name)
    tenant = _claim(claims, issuer.claim_path)
    if not isinstance(tenant, str) or not tenant:
        return RefusedJwt("JWT names no tenant", name, credential_id)
    if tenant not in trust.tenants:
        return RefusedJwt("JWT names an unknown tenant", name, credential_id)
    if issuer.tenants is not None and tenant not in issuer.tenants:
        return RefusedJwt("JWT issuer may not name this tenant", name, credential_id)
    return VerifiedJwt(tenant, credential_id, name)


def _from_payloads(
    trust: JwtTrust,
    payloads: Mapping[str, Mapping[str, Any]],
    failures: Mapping[str, Mapping[str, Any]],
) -> VerifiedJwt | RefusedJwt:
    """A verified token's claims, unless another token (or provider) of the request
    failed, or two issuers claimed it."""
    token_failures = {
        name: f for name, f in failures.items() if name in payloads or not _not_this_token(f)
    }
    if token_failures:
        return RefusedJwt(_problem(token_failures, ""))
    if len(payloads) > 1:
        return RefusedJwt("conflicting credentials")
    ((name, claims),) = payloads.items()
    return _verified(trust, name, claims)


def verify_jwt(
    trust: JwtTrust, metadata: Mapping[str, Any], headers: Mapping[str, str]
) -> VerifiedJwt | RefusedJwt | None:
    """The request's JWT credential (module doc). ``metadata``: the ``jwt_authn`` namespace
    of the check request's metadata context (empty when there is none); ``headers``: the
    request's, lower-case names (a token Envoy verified is no longer among them)."""
    payloads = _entries(metadata, JWT_PAYLOAD_PREFIX)
    failures = _entries(metadata, JWT_FAILURE_PREFIX)
    if payloads:
        return _from_payloads(trust, payloads, failures)
    if not trust:
        return None
    token = bearer_token(headers)
    if token is None or not _jwt_shaped(token):
        return None
    if not failures:
        return RefusedJwt("unverified JWT")
    return RefusedJwt(_problem(failures, token))
