"""Tenant JWTs through a real Envoy: its jwt_authn filter verifies tokens against a JWKS it
fetches from a loopback server, ext_authz takes the tenant from the verified claims; a
token that is expired, not yet valid, forged, unsigned, for another audience or issuer, or
naming an unknown tenant is a 401 with a decision record, and no backend is reached."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.integration.authz.conftest import AuthzMesh, Reply, run_authz_mesh
from tests.integration.authz.test_tenant_keys_envoy import (
    CLEAN,
    PUBLIC_REASONING,
    records,
    with_local_only_globex,
)
from tests.support.jwks import JwksServer, SigningKey
from tiermesh.agents.authz import JwtTrust, KeyTable
from tiermesh.controlplane.api import ApiKeyEntry, Catalog, new_api_key

pytestmark = pytest.mark.envoy

ISSUER = "https://login.test.example/"
AUDIENCE = "tiermesh-apps"
GLOBEX_KEY, GLOBEX = new_api_key()


def with_issuer(jwks_uri: str, cache_s: int) -> Callable[[Catalog], Catalog]:
    """The two-tenant catalog with one JWT issuer whose key set Envoy fetches from
    ``jwks_uri``, kept ``cache_s`` seconds."""

    def adjust(catalog: Catalog) -> Catalog:
        catalog = with_local_only_globex(catalog)
        issuer = {
            "name": "idp",
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "remote_jwks": {
                "uri": jwks_uri,
                "cache_duration_s": cache_s,
                "fetch_timeout_ms": 2000,
            },
            "tenant_claim": "org",
        }
        return Catalog.model_validate({**catalog.model_dump(mode="json"), "jwt_issuers": [issuer]})

    return adjust


class JwtMesh:
    def __init__(self, mesh: AuthzMesh, jwks: JwksServer, key: SigningKey) -> None:
        self.mesh = mesh
        self.jwks = jwks
        self.key = key

    def token(self, tenant: str | None = "acme", **claims: object) -> str:
        body: dict[str, object] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-billing"}
        if tenant is not None:
            body["org"] = tenant
        return self.key.token({**body, **claims})

    def send(self, token: str | None, **headers: str) -> Reply:
        auth = {} if token is None else {"authorization": f"Bearer {token}"}
        return self.mesh.send({**PUBLIC_REASONING, **auth, **headers}, CLEAN)


@pytest.fixture
def jwt_mesh(tmp_path: Path) -> Iterator[JwtMesh]:
    key = SigningKey()
    jwks = JwksServer(key)
    try:
        adjust = with_issuer(jwks.uri, cache_s=1)
        with run_authz_mesh(tmp_path, adjust) as mesh:
            mesh.authz.use_keys(
                KeyTable(
                    (ApiKeyEntry(id=GLOBEX.key_id, tenant="globex", sha256=GLOBEX.digest),),
                    required=True,
                    jwt=JwtTrust.of(mesh.catalog),
                )
            )
            yield JwtMesh(mesh, jwks, key)
    finally:
        jwks.stop()


def _record(mesh: AuthzMesh, reply: Reply) -> dict[str, object]:
    decision_id = reply.decision_id or json.loads(reply.body)["decision_id"]
    return records(mesh)[decision_id]


def test_a_verified_token_names_the_tenant_whatever_the_header(jwt_mesh: JwtMesh) -> None:
    mesh = jwt_mesh.mesh
    acme_token = jwt_mesh.token("acme")
    as_acme = jwt_mesh.send(acme_token, **{"x-tiermesh-tenant": "globex"})
    assert (as_acme.status, as_acme.backend, as_acme.tier) == (200, "cloud", "cloud")

    as_globex = jwt_mesh.send(jwt_mesh.token("globex"), **{"x-tiermesh-tenant": "acme"})
    assert (as_globex.status, as_globex.backend, as_globex.tier) == (200, "edge", "local")

    acme_record = _record(mesh, as_acme)
    document = acme_record["input"]
    assert isinstance(document, dict)
    assert document["tenant"] == "acme"
    assert document["credential"] == {
        "kind": "jwt",
        "id": f"{ISSUER}#svc-billing",
        "issuer": "idp",
    }
    assert acme_token not in json.dumps(acme_record)
    assert acme_token.split(".")[2] not in json.dumps(acme_record)
    globex_input = _record(mesh, as_globex)["input"]
    assert isinstance(globex_input, dict)
    assert globex_input["tenant"] == "globex"


def test_the_token_is_not_forwarded_upstream(jwt_mesh: JwtMesh) -> None:
    reply = jwt_mesh.send(jwt_mesh.token("globex"))
    assert (reply.status, reply.backend) == (200, "edge")
    (seen,) = jwt_mesh.mesh.backends["edge"].requests
    assert "authorization" not in seen
    assert seen["x-tiermesh-tenant"] == "globex"
    assert not any("eyJ" in value for value in seen.values())


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"exp": -600}, "expired JWT"),
        ({"nbf": 600}, "JWT not yet valid"),
        ({"aud": "someone-else"}, "JWT audience not accepted"),
        ({"iss": "https://evil.example/"}, "JWT issuer not accepted"),
        ({"org": "initech"}, "JWT names an unknown tenant"),
        ({"org": None}, "JWT names no tenant"),
        ({"sub": None}, "JWT names no subject (sub or jti)"),
    ],
    ids=["expired", "not-yet-valid", "audience", "issuer", "unknown-tenant", "no-tenant", "no-sub"],
)
def test_a_token_with_bad_claims_is_refused_recorded_and_reaches_no_backend(
    jwt_mesh: JwtMesh, claims: dict[str, object], problem: str
) -> None:
    now = int(time.time())
    body: dict[str, object] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-billing", "org": "acme"}
    for name, value in claims.items():
        if value is None:
            body.pop(name)
        else:
            body[name] = now + value if name in {"exp", "nbf"} else value
    _assert_refused(jwt_mesh, jwt_mesh.key.token(body), problem)


def _assert_refused(jwt_mesh: JwtMesh, token: str | None, problem: str) -> None:
    mesh = jwt_mesh.mesh
    reply = jwt_mesh.send(token, **{"x-tiermesh-tenant": "acme"})
    assert reply.status == 401, reply.body
    assert mesh.reached() == 0
    body = json.loads(reply.body)
    assert (body["error"], body["reason"]) == ("unauthenticated", problem)
    record = _record(mesh, reply)
    result = record["result"]
    assert isinstance(result, dict)
    assert (result["status"], result["reason"], result["allow"]) == (401, problem, False)
    if token:
        assert token not in json.dumps(record)


def test_a_token_signed_by_another_key_is_refused(jwt_mesh: JwtMesh) -> None:
    forger = SigningKey(jwt_mesh.key.kid)  # same kid, other key
    token = forger.token({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "org": "acme"})
    _assert_refused(jwt_mesh, token, "JWT signature invalid")


def test_a_token_signed_by_an_unknown_kid_is_refused(jwt_mesh: JwtMesh) -> None:
    token = SigningKey().token({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "org": "acme"})
    _assert_refused(jwt_mesh, token, "JWT signed by an unknown key")


def test_an_unsigned_token_is_refused(jwt_mesh: JwtMesh) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "org": "acme", "exp": now + 60}
    token = jwt.encode(claims, None, "none")
    _assert_refused(jwt_mesh, token, "unsigned JWT (alg none)")


def test_a_token_without_expiry_is_refused(jwt_mesh: JwtMesh) -> None:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "org": "acme"}
    token = jwt.encode(claims, jwt_mesh.key.private, "RS256", headers={"kid": jwt_mesh.key.kid})
    _assert_refused(jwt_mesh, token, "JWT without expiry")


def test_a_mangled_token_is_refused(jwt_mesh: JwtMesh) -> None:
    head, payload, signature = jwt_mesh.token("acme").split(".")
    _assert_refused(jwt_mesh, f"{head}.{payload}x.{signature}", "malformed JWT")


def test_no_credential_is_refused_when_required(jwt_mesh: JwtMesh) -> None:
    _assert_refused(jwt_mesh, None, "no credential")


def test_a_token_and_a_key_of_different_tenants_conflict(jwt_mesh: JwtMesh) -> None:
    token = jwt_mesh.token("acme")
    reply = jwt_mesh.send(token, **{"x-api-key": GLOBEX_KEY})
    assert reply.status == 401
    assert json.loads(reply.body)["reason"] == "conflicting credentials"
    assert jwt_mesh.mesh.reached() == 0

    same = jwt_mesh.send(jwt_mesh.token("globex"), **{"x-api-key": GLOBEX_KEY})
    assert (same.status, same.backend) == (200, "edge")


def test_a_tenant_key_as_bearer_still_authenticates(jwt_mesh: JwtMesh) -> None:
    reply = jwt_mesh.send(GLOBEX_KEY, **{"x-tiermesh-tenant": "acme"})
    assert (reply.status, reply.backend) == (200, "edge")
    assert _record(jwt_mesh.mesh, reply)["input"]["credential"] == {  # type: ignore[index]
        "kind": "api_key",
        "id": GLOBEX.key_id,
    }


def test_a_rotated_key_set_is_fetched_again(jwt_mesh: JwtMesh) -> None:
    assert jwt_mesh.send(jwt_mesh.token("globex")).status == 200
    fetched = jwt_mesh.jwks.fetches
    assert fetched >= 1
    old_key, new_key = jwt_mesh.key, SigningKey()
    jwt_mesh.jwks.publish(new_key)
    jwt_mesh.key = new_key
    deadline = time.monotonic() + 15
    statuses: list[int] = []
    while time.monotonic() < deadline:
        statuses.append(jwt_mesh.send(jwt_mesh.token("globex")).status)
        if statuses[-1] == 200:
            break
        time.sleep(0.25)
    assert statuses[-1] == 200, statuses
    assert jwt_mesh.jwks.fetches > fetched
    jwt_mesh.key = old_key  # retired: no longer in the key set
    for backend in jwt_mesh.mesh.backends.values():
        backend.models.clear()
    _assert_refused(jwt_mesh, jwt_mesh.token("acme"), "JWT signed by an unknown key")


def test_keys_that_cannot_be_fetched_refuse_the_token(jwt_mesh: JwtMesh) -> None:
    jwt_mesh.jwks.stop()  # the 1 s cache runs out; the refetch fails
    deadline = time.monotonic() + 15
    reply = jwt_mesh.send(jwt_mesh.token("globex"))
    while reply.status == 200 and time.monotonic() < deadline:
        time.sleep(0.25)
        reply = jwt_mesh.send(jwt_mesh.token("globex"))
    assert reply.status == 401, reply.body
    assert json.loads(reply.body)["reason"] == "JWKS unavailable"


def test_an_inline_key_set_verifies_tokens_in_envoy(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = {**json.loads(ECAlgorithm.to_jwk(private.public_key())), "kid": "ci-1"}

    def adjust(catalog: Catalog) -> Catalog:
        catalog = with_local_only_globex(catalog)
        issuer = {
            "name": "ci",
            "issuer": "ci-runner",
            "audiences": [AUDIENCE],
            "local_jwks": {"keys": [jwk]},
        }
        return Catalog.model_validate({**catalog.model_dump(mode="json"), "jwt_issuers": [issuer]})

    def token(key: ec.EllipticCurvePrivateKey) -> str:
        claims = {"iss": "ci-runner", "aud": AUDIENCE, "sub": "job-7", "tenant": "globex",
                  "exp": int(time.time()) + 60}  # fmt: skip
        return jwt.encode(claims, key, "ES256", headers={"kid": "ci-1"})

    with run_authz_mesh(tmp_path, adjust) as mesh:
        mesh.authz.use_keys(KeyTable((), required=True, jwt=JwtTrust.of(mesh.catalog)))
        good = mesh.send({**PUBLIC_REASONING, "authorization": f"Bearer {token(private)}"}, CLEAN)
        assert (good.status, good.backend) == (200, "edge")
        forged = token(ec.generate_private_key(ec.SECP256R1()))
        bad = mesh.send({**PUBLIC_REASONING, "authorization": f"Bearer {forged}"}, CLEAN)
        assert bad.status == 401
        assert json.loads(bad.body)["reason"] == "JWT signature invalid"
        assert mesh.reached() == 1


def test_a_token_hmac_signed_with_the_public_key_is_refused(jwt_mesh: JwtMesh) -> None:
    """The algorithm-confusion forgery: HS256 keyed with the issuer's public key."""
    public = jwt_mesh.key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def part(value: dict[str, object]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "org": "acme",
              "exp": int(time.time()) + 60}  # fmt: skip
    signed = part({"alg": "HS256", "kid": jwt_mesh.key.kid}) + b"." + part(claims)
    mac = hmac.new(public, signed, hashlib.sha256).digest()
    token = (signed + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    _assert_refused(jwt_mesh, token, "JWT signed by an unknown key")


def test_two_authorization_headers_are_refused(jwt_mesh: JwtMesh) -> None:
    """However Envoy and the check see two ``authorization`` headers (one JWT and a key of
    another tenant, or two tokens), the request is refused, never routed."""
    token = jwt_mesh.token("acme")
    for values in ([token, GLOBEX_KEY], [GLOBEX_KEY, token], [token, token]):
        connection = http.client.HTTPConnection("127.0.0.1", jwt_mesh.mesh.listener, timeout=10)
        try:
            connection.putrequest("POST", "/v1/chat/completions")
            headers = {"content-type": "application/json", "content-length": str(len(CLEAN))}
            for name, value in {**headers, **PUBLIC_REASONING}.items():
                connection.putheader(name, value)
            for value in values:
                connection.putheader("authorization", f"Bearer {value}")
            connection.endheaders(CLEAN)
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        assert response.status == 401, values
    assert jwt_mesh.mesh.reached() == 0


def test_the_scheme_may_be_bearer_in_lower_case(jwt_mesh: JwtMesh) -> None:
    token = jwt_mesh.token("globex")
    lower = jwt_mesh.mesh.send({**PUBLIC_REASONING, "authorization": f"bearer {token}"}, CLEAN)
    assert (lower.status, lower.backend) == (200, "edge")
    (seen,) = jwt_mesh.mesh.backends["edge"].requests
    assert "authorization" not in seen
    shouted = jwt_mesh.mesh.send({**PUBLIC_REASONING, "authorization": f"BEARER {token}"}, CLEAN)
    assert shouted.status == 401
    assert json.loads(shouted.body)["reason"] == "unverified JWT"


def test_envoy_takes_an_https_jwks_cluster(tmp_path: Path) -> None:
    """The TLS cluster of an ``https`` key set (system roots, the host as SAN) is config
    Envoy accepts; here the host does not resolve, so a token's keys are unavailable."""
    adjust = with_issuer("https://jwks.invalid/.well-known/jwks.json", cache_s=60)
    with run_authz_mesh(tmp_path, adjust) as mesh:  # routes served: CDS and LDS accepted
        mesh.authz.use_keys(KeyTable((), required=True, jwt=JwtTrust.of(mesh.catalog)))
        token = SigningKey().token({"iss": ISSUER, "aud": AUDIENCE, "sub": "s", "org": "acme"})
        reply = mesh.send({**PUBLIC_REASONING, "authorization": f"Bearer {token}"}, CLEAN)
        assert reply.status == 401
        assert json.loads(reply.body)["reason"] == "JWKS unavailable"
        assert mesh.reached() == 0
