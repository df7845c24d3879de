"""JWT issuers in the catalog: one key set each, fetched safely, naming catalog tenants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tiermesh.controlplane.api import CatalogError, JwtIssuer, parse_catalog
from tiermesh.controlplane.api.catalog import jwks_address

DEMO = Path(__file__).resolve().parents[3] / "policies" / "data" / "catalog.yaml"
FILE = "catalog.yaml"
PUBLIC_JWK = {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "kid": "k1"}


def _issuer(**fields: Any) -> dict[str, Any]:
    return {
        "name": "idp",
        "issuer": "https://login.example.com/",
        "audiences": ["tiermesh"],
        "remote_jwks": {"uri": "https://login.example.com/.well-known/jwks.json"},
        **fields,
    }


def _with(*issuers: dict[str, Any]) -> str:
    raw: dict[str, Any] = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw["jwt_issuers"] = list(issuers)
    return yaml.safe_dump(raw)


def _problems(*issuers: dict[str, Any]) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(_with(*issuers), file=FILE)
    return [line.removeprefix(f"{FILE}: ") for line in str(caught.value).splitlines()]


def test_an_issuer_with_a_remote_key_set_loads_with_its_defaults() -> None:
    catalog = parse_catalog(_with(_issuer(tenants=["acme", "globex"])), file=FILE)
    (issuer,) = catalog.jwt_issuers
    assert issuer.remote_jwks is not None
    assert (issuer.remote_jwks.cache_duration_s, issuer.remote_jwks.fetch_timeout_ms) == (
        300,
        2000,
    )
    assert (issuer.tenant_claim, issuer.claim_path, issuer.clock_skew_s) == (
        "tenant",
        ("tenant",),
        60,
    )
    assert issuer.tenants == ("acme", "globex")


def test_the_demo_catalog_names_no_issuer() -> None:
    catalog = parse_catalog(DEMO.read_text(encoding="utf-8"), file=FILE)
    assert catalog.jwt_issuers == ()


def test_an_inline_key_set_and_a_nested_claim() -> None:
    issuer = JwtIssuer.model_validate(
        _issuer(remote_jwks=None, local_jwks={"keys": [PUBLIC_JWK]}, tenant_claim=["org", "id"])
    )
    assert issuer.claim_path == ("org", "id")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"remote_jwks": None},
            "jwt_issuers[0]: Value error, issuer 'idp' needs exactly one of remote_jwks, "
            "local_jwks",
        ),
        (
            {"local_jwks": {"keys": [PUBLIC_JWK]}},
            "jwt_issuers[0]: Value error, issuer 'idp' needs exactly one of remote_jwks, "
            "local_jwks",
        ),
        (
            {"remote_jwks": None, "local_jwks": {"keys": []}},
            "jwt_issuers[0]: Value error, issuer 'idp': local_jwks must be a JWKS document "
            "({keys: [{kty: ..., ...}, ...]}) with at least one key",
        ),
        (
            {"remote_jwks": None, "local_jwks": {"keys": [{**PUBLIC_JWK, "d": "secret"}]}},
            "jwt_issuers[0]: Value error, issuer 'idp': local_jwks holds secret key material "
            "(d): give public keys only",
        ),
        (
            {"remote_jwks": {"uri": "http://login.example.com/jwks"}},
            "jwt_issuers[0].remote_jwks.uri: Value error, plain http is allowed only to a "
            "loopback IP address, not 'login.example.com': keys fetched in the clear could "
            "be swapped on the way (got 'http://login.example.com/jwks')",
        ),
        (
            {"remote_jwks": {"uri": "ftp://login.example.com/jwks"}},
            "jwt_issuers[0].remote_jwks.uri: Value error, the scheme must be https (or http "
            "to a loopback address) (got 'ftp://login.example.com/jwks')",
        ),
        (
            {"remote_jwks": {"uri": "https://user:pw@login.example.com/jwks"}},
            "jwt_issuers[0].remote_jwks.uri: Value error, the URL may not carry credentials "
            "(got 'https://user:pw@login.example.com/jwks')",
        ),
        (
            {"audiences": []},
            "jwt_issuers[0].audiences: Tuple should have at least 1 item after validation, not 0",
        ),
        (
            {"tenant_claim": ""},
            "jwt_issuers[0].tenant_claim: Value error, tenant_claim must be a non-empty "
            "claim name (or list of names) (got '')",
        ),
        ({"tenants": ["nobody"]}, "jwt_issuers[0].tenants[0]: unknown tenant 'nobody'"),
    ],
)
def test_a_bad_issuer_is_refused_naming_the_field(fields: dict[str, Any], problem: str) -> None:
    assert _problems(_issuer(**fields)) == [problem]


def test_issuers_are_unique_by_name_and_by_issuer() -> None:
    assert _problems(_issuer(), _issuer(name="other"), _issuer(issuer="https://b/")) == [
        "jwt_issuers[2].name: duplicate jwt_issuer name 'idp'",
        "jwt_issuers[1].issuer: issuer 'other' has the same issuer "
        "'https://login.example.com/' as 'idp': a token could not tell which one verified it",
    ]


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        ("https://idp.example/jwks", ("idp.example", 443, True)),
        ("https://idp.example:8443/jwks", ("idp.example", 8443, True)),
        ("http://127.0.0.1:9000/jwks", ("127.0.0.1", 9000, False)),
        ("http://[::1]/jwks", ("::1", 80, False)),
    ],
)
def test_jwks_address(uri: str, address: tuple[str, int, bool]) -> None:
    assert jwks_address(uri) == address
