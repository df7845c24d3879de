"""Inline JWKS of the catalog's JWT issuers, checked as Envoy will load them.

Envoy refuses a whole ``jwt_authn`` filter (so the node's listener update) when one inline
key cannot be loaded, so a bundle whose ``jwt_issuers[].local_jwks`` holds such a key is
refused at check time instead, naming the key. Each key must be a public key Envoy
verifies with: ``RSA`` (``n``, ``e``; ``alg`` RS*/PS* if given), ``EC`` (``crv`` P-256,
P-384 or P-521 with ``x``, ``y`` on the curve; ``alg`` the curve's ES* if given) or
``OKP`` (``crv`` Ed25519, 32-byte ``x``; ``alg`` EdDSA if given). Pure.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tiermesh.controlplane.api import Catalog, CatalogProblem

__all__ = ["inline_jwks_problems", "jwk_problem"]

_CURVES: dict[str, tuple[ec.EllipticCurve, str]] = {
    "P-256": (ec.SECP256R1(), "ES256"),
    "P-384": (ec.SECP384R1(), "ES384"),
    "P-521": (ec.SECP521R1(), "ES512"),
}
_ED25519_BYTES = 32
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _bytes(key: Mapping[str, object], name: str) -> bytes:
    value = key.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"[{name}] is missing")
    if not _BASE64URL.fullmatch(value):
        raise ValueError(f"[{name}] is not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        raise ValueError(f"[{name}] is not base64url") from None


def _integer(key: Mapping[str, object], name: str) -> int:
    return int.from_bytes(_bytes(key, name), "big")


def _rsa(key: Mapping[str, object], alg: object) -> None:
    if alg is not None and not (isinstance(alg, str) and alg[:2] in {"RS", "PS"}):
        raise ValueError(f"alg {alg!r} is not an RSA algorithm (RS*, PS*)")
    rsa.RSAPublicNumbers(_integer(key, "e"), _integer(key, "n")).public_key()


def _ec(key: Mapping[str, object], alg: object) -> None:
    crv = key.get("crv")
    if not isinstance(crv, str) or crv not in _CURVES:
        raise ValueError(f"crv {crv!r} is not one of {', '.join(_CURVES)}")
    curve, expected = _CURVES[crv]
    if alg is not None and alg != expected:
        raise ValueError(f"alg {alg!r} does not go with crv {crv} ({expected})")
    ec.EllipticCurvePublicNumbers(_integer(key, "x"), _integer(key, "y"), curve).public_key()


def _okp(key: Mapping[str, object], alg: object) -> None:
    if key.get("crv") != "Ed25519":
        raise ValueError(f"crv {key.get('crv')!r} is not Ed25519")
    if alg is not None and alg != "EdDSA":
        raise ValueError(f"alg {alg!r} is not EdDSA")
    raw = _bytes(key, "x")
    if len(raw) != _ED25519_BYTES:
        raise ValueError(f"[x] is {len(raw)} bytes, not {_ED25519_BYTES}")
    ed25519.Ed25519PublicKey.from_public_bytes(raw)


def jwk_problem(key: Mapping[str, object]) -> str | None:
    """Why Envoy could not load the JWK ``key`` (module doc), or None."""
    kty, alg = key.get("kty"), key.get("alg")
    loaders = {"RSA": _rsa, "EC": _ec, "OKP": _okp}
    loader = loaders.get(kty) if isinstance(kty, str) else None
    if loader is None:
        return f"key type {kty!r} is not supported (RSA, EC or OKP public keys)"
    try:
        loader(key, alg)
    except (ValueError, TypeError) as exc:
        return f"{kty} key: {exc}"
    return None


def inline_jwks_problems(catalog: Catalog) -> list[CatalogProblem]:
    """One problem per inline key of ``catalog``'s JWT issuers that Envoy could not load."""
    problems: list[CatalogProblem] = []
    for i, issuer in enumerate(catalog.jwt_issuers):
        keys = (issuer.local_jwks or {}).get("keys")
        for k, key in enumerate(keys if isinstance(keys, list) else []):
            problem = jwk_problem(key) if isinstance(key, dict) else "not a JSON object"
            if problem is not None:
                problems.append(CatalogProblem(f"jwt_issuers[{i}].local_jwks.keys[{k}]", problem))
    return problems
