"""Inline JWKS of the catalog's JWT issuers: a key Envoy could not load refuses the bundle
at check time (naming the key and its line), instead of a listener Envoy would reject."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.controlplane.bundle import Stage, read_documents
from tiermesh.controlplane.bundle.jwks import jwk_problem

CATALOG = "data/catalog.yaml"


def _rsa() -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return {**json.loads(RSAAlgorithm.to_jwk(key)), "alg": "RS256"}


def _ec(curve: ec.EllipticCurve | None = None) -> dict[str, Any]:
    curve = curve or ec.SECP256R1()
    return dict(json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(curve).public_key())))


def _ed25519() -> dict[str, Any]:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return dict(json.loads(OKPAlgorithm.to_jwk(key)))


def test_public_keys_envoy_loads_pass() -> None:
    for key in (_rsa(), _ec(), _ec(ec.SECP384R1()), _ed25519(), {**_ec(), "alg": "ES256"}):
        assert jwk_problem(key) is None, key


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda: {**_rsa(), "n": "!!"}, "RSA key: [n] is not base64url"),
        (lambda: {k: v for k, v in _rsa().items() if k != "e"}, "RSA key: [e] is missing"),
        (lambda: {**_rsa(), "alg": "ES256"}, "RSA key: alg 'ES256' is not an RSA algorithm"),
        (lambda: {**_ec(), "crv": "P-192"}, "EC key: crv 'P-192' is not one of P-256"),
        (lambda: {**_ec(), "alg": "ES384"}, "EC key: alg 'ES384' does not go with crv P-256"),
        (lambda: {**_ec(), "y": _ec()["x"]}, "EC key: "),
        (lambda: {**_ed25519(), "x": "AAAA"}, "OKP key: [x] is 3 bytes, not 32"),
        (lambda: {"kty": "oct", "k": "c2VjcmV0"}, "key type 'oct' is not supported"),
    ],
)
def test_keys_envoy_would_refuse_are_named(change: Any, problem: str) -> None:
    found = jwk_problem(change())
    assert found is not None
    assert found.startswith(problem), found


def test_a_bundle_with_an_unloadable_inline_key_is_refused_at_the_key() -> None:
    files = policy_files()
    catalog = yaml.safe_load(files[CATALOG])
    catalog["jwt_issuers"] = [
        {
            "name": "ci",
            "issuer": "ci-runner",
            "audiences": ["tiermesh"],
            "local_jwks": {"keys": [_ed25519(), {**_rsa(), "n": "!!"}]},
        }
    ]
    files[CATALOG] = yaml.safe_dump(catalog, sort_keys=False).encode()
    documents = read_documents(files)
    assert documents.catalog is None
    (finding,) = documents.findings
    assert finding.stage is Stage.CATALOG
    assert finding.file == CATALOG
    assert finding.message == ("jwt_issuers[0].local_jwks.keys[1]: RSA key: [n] is not base64url")
    assert finding.line is not None
