"""Tenant JWTs at the request edge: Envoy's verdict (dynamic metadata) turned into a
credential, combined with tenant API keys, and the authorizer deciding as the token's
tenant or answering 401."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import struct_pb2

from tests.unit.authz.conftest import Rig
from tests.unit.authz.test_authorizer import SCHEMA, chat
from tests.unit.compiler.plans import demo_catalog
from tiermesh.agents.authz import (
    Authenticated,
    CheckInput,
    JwtTrust,
    KeyTable,
    Refused,
    key_table,
)
from tiermesh.agents.authz.jwt_claims import NO_ISSUERS, RefusedJwt, VerifiedJwt, verify_jwt
from tiermesh.agents.authz.server import to_check_input
from tiermesh.controlplane.api import ApiKeyEntry, Catalog, new_api_key
from tiermesh.controlplane.api.tenant_jwt import MISSING_MESSAGE, UNKNOWN_ISSUER_MESSAGE

ISS = "https://login.example.com/"
PARTNER_ISS = "https://partner.example/"
BROKE_KEY, BROKE = new_api_key()
ACME_KEY, ACME = new_api_key()


def _catalog() -> Catalog:
    raw = demo_catalog().model_dump(mode="json")
    raw["tenants"] += [{**raw["tenants"][0], "name": "broke"}]
    jwks = {"uri": "https://login.example.com/jwks"}
    raw["jwt_issuers"] = [
        {"name": "idp", "issuer": ISS, "audiences": ["a"], "remote_jwks": jwks,
         "tenant_claim": "org_id"},
        {"name": "partner", "issuer": PARTNER_ISS, "audiences": ["a"],
         "remote_jwks": {"uri": "https://partner.example/jwks"},
         "tenant_claim": ["org", "id"], "tenants": ["globex"]},
    ]  # fmt: skip
    return Catalog.model_validate(raw)


CATALOG = _catalog()
TRUST = JwtTrust.of(CATALOG)
ENTRIES = (
    ApiKeyEntry(id=BROKE.key_id, tenant="broke", sha256=BROKE.digest),
    ApiKeyEntry(id=ACME.key_id, tenant="acme", sha256=ACME.digest),
)
REQUIRED = KeyTable(ENTRIES, required=True, jwt=TRUST)
OPTIONAL = KeyTable(ENTRIES, required=False, jwt=TRUST)


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def token(header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None) -> str:
    """A JWT-shaped string (never verified here: Envoy's verdict is the metadata)."""
    head = header or {"alg": "RS256", "kid": "k"}
    return f"{_b64(head)}.{_b64(claims or {'iss': ISS, 'exp': 1})}.c2ln"


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def verified(**claims: Any) -> dict[str, Any]:
    """Metadata of a token the ``idp`` provider verified (and ``partner`` did not own)."""
    return {
        "payload/idp": {"iss": ISS, "sub": "svc-1", "org_id": "acme", **claims},
        "failure/partner": {"code": "24", "message": UNKNOWN_ISSUER_MESSAGE},
    }


def refused(message: str) -> dict[str, Any]:
    return {
        "failure/idp": {"code": "3", "message": message},
        "failure/partner": {"code": "24", "message": UNKNOWN_ISSUER_MESSAGE},
    }


def test_a_verified_token_names_its_tenant_and_an_id_without_the_token() -> None:
    assert verify_jwt(TRUST, verified(), {}) == VerifiedJwt("acme", f"{ISS}#svc-1", "idp")
    assert verify_jwt(TRUST, verified(sub=None, jti="j-1"), {}) == VerifiedJwt(
        "acme", f"{ISS}#jti:j-1", "idp"
    )


def test_a_subject_that_may_be_personal_data_is_recorded_as_a_digest() -> None:
    result = verify_jwt(TRUST, verified(sub="jane.doe@example.com"), {})
    assert isinstance(result, VerifiedJwt)
    assert result.credential_id.startswith(f"{ISS}#sha256:")
    assert "jane" not in result.credential_id


def test_a_nested_tenant_claim_and_the_issuers_own_tenants() -> None:
    partner = {"iss": PARTNER_ISS, "sub": "s", "org": {"id": "globex"}}
    metadata = {"payload/partner": partner, "failure/idp": {"message": UNKNOWN_ISSUER_MESSAGE}}
    assert verify_jwt(TRUST, metadata, {}) == VerifiedJwt("globex", f"{PARTNER_ISS}#s", "partner")
    other = {"payload/partner": {**partner, "org": {"id": "acme"}}}
    assert verify_jwt(TRUST, other, {}) == RefusedJwt(
        "JWT issuer may not name this tenant", "partner", f"{PARTNER_ISS}#s"
    )


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"org_id": "initech-unknown"}, "JWT names an unknown tenant"),
        ({"org_id": None}, "JWT names no tenant"),
        ({"org_id": ["acme"]}, "JWT names no tenant"),
        ({"sub": None}, "JWT names no subject (sub or jti)"),
        ({"iss": PARTNER_ISS}, "JWT issuer not accepted"),
    ],
)
def test_verified_claims_that_name_no_catalog_tenant_are_refused(
    claims: dict[str, Any], problem: str
) -> None:
    result = verify_jwt(TRUST, verified(**claims), {})
    assert isinstance(result, RefusedJwt)
    assert result.problem == problem


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("Jwt is expired", "expired JWT"),
        ("Jwt not yet valid", "JWT not yet valid"),
        ("Audiences in Jwt are not allowed", "JWT audience not accepted"),
        ("Jwt verification fails", "JWT signature invalid"),
        ("Jwks doesn't have key to match kid or alg from Jwt", "JWT signed by an unknown key"),
        ("Jwks remote fetch is failed", "JWKS unavailable"),
        ("Jwt header is an invalid Base64url encoded", "malformed JWT"),
        ("Something new\x00 from Envoy", "invalid JWT (Something new from Envoy)"),
    ],
)
def test_envoys_refusal_is_named(message: str, problem: str) -> None:
    assert verify_jwt(TRUST, refused(message), bearer(token())) == RefusedJwt(problem)


def test_a_token_no_issuer_owns_is_refused_as_a_foreign_issuer() -> None:
    metadata = {
        "failure/idp": {"message": UNKNOWN_ISSUER_MESSAGE},
        "failure/partner": {"message": UNKNOWN_ISSUER_MESSAGE},
    }
    assert verify_jwt(TRUST, metadata, bearer(token())) == RefusedJwt("JWT issuer not accepted")


def test_a_token_envoy_did_not_read_is_unverified() -> None:
    """``BEARER <jwt>``: the bearer value is a JWT but every provider found none."""
    metadata = {
        "failure/idp": {"message": MISSING_MESSAGE},
        "failure/partner": {"message": MISSING_MESSAGE},
    }
    headers = {"authorization": f"BEARER {token()}"}
    assert verify_jwt(TRUST, metadata, headers) == RefusedJwt("unverified JWT")


def test_unsigned_and_expiry_less_tokens_are_named_from_the_unverified_token() -> None:
    unsigned = token({"alg": "none"})
    malformed = refused("Jwt is not in the form of Header.Payload.Signature")
    assert verify_jwt(TRUST, malformed, bearer(unsigned)) == RefusedJwt("unsigned JWT (alg none)")
    no_exp = token(claims={"iss": ISS, "sub": "x"})
    assert verify_jwt(TRUST, refused("Jwt verification fails"), bearer(no_exp)) == RefusedJwt(
        "JWT without expiry"
    )


def test_a_payload_beside_a_refusal_of_the_same_request_is_refused() -> None:
    metadata = {**verified(), "failure/idp": {"message": "Jwt is expired"}}
    assert verify_jwt(TRUST, metadata, {}) == RefusedJwt("expired JWT")


def test_no_token_tenant_keys_and_other_bearer_values_are_not_jwts() -> None:
    missing = {"failure/idp": {"message": MISSING_MESSAGE}}
    bad_format = refused("Jwt is not in the form of Header.Payload.Signature")
    assert verify_jwt(TRUST, missing, {}) is None
    assert verify_jwt(TRUST, bad_format, bearer(BROKE_KEY)) is None
    assert verify_jwt(TRUST, bad_format, bearer("sk-no-key-required")) is None


def test_a_jwt_envoy_left_no_verdict_for_is_refused_where_issuers_are_named() -> None:
    assert verify_jwt(TRUST, {}, bearer(token())) == RefusedJwt("unverified JWT")
    assert verify_jwt(NO_ISSUERS, {}, bearer(token())) is None
    assert verify_jwt(NO_ISSUERS, verified(), {}) == RefusedJwt("JWT issuer not accepted")


@pytest.mark.parametrize(
    ("table", "headers", "metadata", "expected"),
    [
        (REQUIRED, {}, verified(), Authenticated(f"{ISS}#svc-1", "acme", "jwt", "idp")),
        (OPTIONAL, {}, verified(), Authenticated(f"{ISS}#svc-1", "acme", "jwt", "idp")),
        (REQUIRED, bearer(token()), refused("Jwt is expired"), Refused("expired JWT", None, "jwt")),
        (OPTIONAL, bearer(token()), refused("Jwt is expired"), Refused("expired JWT", None, "jwt")),
        (REQUIRED, {}, {}, Refused("no credential")),
        (OPTIONAL, {}, {}, None),
        (REQUIRED, bearer(BROKE_KEY), refused("bad format"), Authenticated(BROKE.key_id, "broke")),
        (
            REQUIRED,
            {"x-api-key": BROKE_KEY},
            verified(),
            Refused("conflicting credentials", f"{ISS}#svc-1", "jwt", "idp"),
        ),
        (
            REQUIRED,
            {"x-api-key": ACME_KEY},
            verified(),
            Authenticated(f"{ISS}#svc-1", "acme", "jwt", "idp"),
        ),
        (
            REQUIRED,
            {"x-api-key": "tmk_bogus"},
            verified(),
            Refused("malformed API key"),
        ),
    ],
)
def test_keys_and_tokens_together(
    table: KeyTable,
    headers: dict[str, str],
    metadata: dict[str, Any],
    expected: object,
) -> None:
    assert table.authenticate(headers, metadata) == expected


def test_require_credential_is_the_general_name_of_require_api_key() -> None:
    assert key_table(ENTRIES, {"require_credential": True}).required
    assert key_table(ENTRIES, {"require_api_key": True}).required
    assert not key_table(ENTRIES, {"require_credential": False}).required
    assert key_table(None, {}, CATALOG).jwt == TRUST
    assert not key_table(None, {}).jwt


def check(headers: dict[str, str], metadata: dict[str, Any]) -> CheckInput:
    return CheckInput("POST", "/v1/chat/completions", headers, chat("hi"), jwt_metadata=metadata)


async def test_a_verified_token_decides_as_its_tenant_whatever_the_header(rig: Rig) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=REQUIRED)
    headers = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}
    verdict = await rig.authorizer.decide(check(headers, verified(org_id="broke")))

    (entry,) = rig.sink.entries
    assert entry.input["tenant"] == "broke"
    assert entry.input["credential"] == {"kind": "jwt", "id": f"{ISS}#svc-1", "issuer": "idp"}
    assert entry.input["budget"]["exhausted"] is True  # broke's budget, not acme's
    jsonschema.validate(entry.input, SCHEMA)
    if verdict.allowed:
        assert verdict.set_headers["x-tiermesh-tenant"] == "broke"
    assert "authorization" in verdict.remove_headers


async def test_a_refused_token_is_401_recorded_and_not_evaluated(rig: Rig) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=OPTIONAL)
    jwt = token()
    headers = {**bearer(jwt), "x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}
    verdict = await rig.authorizer.decide(check(headers, refused("Jwt verification fails")))

    assert (verdict.outcome, verdict.status) == ("deny", 401)
    assert json.loads(verdict.denial_body())["reason"] == "JWT signature invalid"
    (entry,) = rig.sink.entries
    assert (entry.result["status"], entry.result["policy_answer"]) == (401, None)
    assert jwt not in json.dumps(entry.input)
    assert "credential" not in entry.input  # unverified: no id to record
    jsonschema.validate(entry.input, SCHEMA)


async def test_a_verified_token_naming_an_unknown_tenant_records_its_id(rig: Rig) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=OPTIONAL)
    verdict = await rig.authorizer.decide(
        check({"x-tiermesh-sensitivity": "public"}, verified(org_id="nobody"))
    )
    assert verdict.status == 401
    (entry,) = rig.sink.entries
    assert entry.result["reason"] == "JWT names an unknown tenant"
    assert entry.input["credential"] == {"kind": "jwt", "id": f"{ISS}#svc-1", "issuer": "idp"}
    jsonschema.validate(entry.input, SCHEMA)


def test_the_check_request_carries_envoys_verdict_and_nothing_else() -> None:
    request = external_auth_pb2.CheckRequest()
    verdict = struct_pb2.Struct()
    verdict.update(verified())
    other = struct_pb2.Struct()
    other.update({"payload/idp": {"org_id": "forged"}})
    metadata = request.attributes.metadata_context.filter_metadata
    metadata["envoy.filters.http.jwt_authn"].CopyFrom(verdict)
    metadata["envoy.filters.http.lua"].CopyFrom(other)
    assert to_check_input(request).jwt_metadata == verified()
    assert to_check_input(external_auth_pb2.CheckRequest()).jwt_metadata == {}
