"""Tenant API keys at the request edge: the key table, and the authorizer deciding as the
key's tenant or answering 401."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.unit.authz.conftest import Rig
from tests.unit.authz.test_authorizer import SCHEMA, chat
from tiermesh.agents.authz import (
    CREDENTIAL_HEADERS,
    Authenticated,
    CheckInput,
    KeyTable,
    Refused,
    key_table,
)
from tiermesh.agents.authz.server import to_check_response
from tiermesh.controlplane.api import ApiKeyEntry, new_api_key

ACME_KEY, ACME = new_api_key()
BROKE_KEY, BROKE = new_api_key()
OLD_KEY, OLD = new_api_key()
ENTRIES = (
    ApiKeyEntry(id=ACME.key_id, tenant="acme", sha256=ACME.digest),
    ApiKeyEntry(id=BROKE.key_id, tenant="broke", sha256=BROKE.digest),
    ApiKeyEntry(id=OLD.key_id, tenant="acme", sha256=OLD.digest, revoked=True),
)
REQUIRED = KeyTable(ENTRIES, required=True)
OPTIONAL = KeyTable(ENTRIES, required=False)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (bearer(ACME_KEY), Authenticated(ACME.key_id, "acme")),
        ({"authorization": f"bearer  {ACME_KEY} "}, Authenticated(ACME.key_id, "acme")),
        ({"x-api-key": BROKE_KEY}, Authenticated(BROKE.key_id, "broke")),
        ({**bearer(ACME_KEY), "x-api-key": ACME_KEY}, Authenticated(ACME.key_id, "acme")),
        ({}, Refused("no credential")),
        ({"authorization": "Basic dXNlcjpwdw=="}, Refused("no credential")),
        (bearer("sk-no-key-required"), Refused("malformed API key")),
        (bearer("tmk_short"), Refused("malformed API key")),
        (
            bearer(ACME_KEY[:-1] + ("A" if ACME_KEY[-1] != "A" else "B")),
            Refused("unknown API key", ACME.key_id),
        ),
        (bearer(new_api_key()[0]), None),  # checked below: unknown id
        (bearer(OLD_KEY), Refused("revoked API key", OLD.key_id)),
        ({**bearer(ACME_KEY), "x-api-key": BROKE_KEY}, Refused("conflicting credentials")),
    ],
)
def test_required_keys(headers: dict[str, str], expected: object) -> None:
    result = REQUIRED.authenticate(headers)
    if expected is None:
        assert isinstance(result, Refused)
        assert result.problem == "unknown API key"
    else:
        assert result == expected


def test_when_keys_are_optional_only_tiermesh_keys_are_checked() -> None:
    assert OPTIONAL.authenticate({}) is None
    assert OPTIONAL.authenticate(bearer("sk-no-key-required")) is None
    assert OPTIONAL.authenticate(bearer(ACME_KEY)) == Authenticated(ACME.key_id, "acme")
    assert OPTIONAL.authenticate(bearer(OLD_KEY)) == Refused("revoked API key", OLD.key_id)
    assert OPTIONAL.authenticate(bearer("tmk_bogus")) == Refused("malformed API key")


def test_the_switch_is_the_require_api_key_setting() -> None:
    assert key_table(ENTRIES, {"require_api_key": True}).required
    assert not key_table(ENTRIES, {}).required
    assert not key_table(ENTRIES, {"require_api_key": "yes"}).required
    assert len(key_table(None, {"require_api_key": True})) == 0


def check(headers: dict[str, str], text: str = "hello there") -> CheckInput:
    return CheckInput("POST", "/v1/chat/completions", headers, chat(text))


async def test_a_valid_key_decides_as_its_tenant_whatever_the_header(rig: Rig) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=REQUIRED)
    headers = {**bearer(BROKE_KEY), "x-api-key": BROKE_KEY, "x-tiermesh-tenant": "acme",
               "x-tiermesh-sensitivity": "public"}  # fmt: skip
    verdict = await rig.authorizer.decide(check(headers))

    (entry,) = rig.sink.entries
    assert entry.input["tenant"] == "broke"
    assert entry.input["credential"] == {"kind": "api_key", "id": BROKE.key_id}
    assert entry.input["budget"]["exhausted"] is True  # broke's budget, not acme's
    assert BROKE.secret not in json.dumps(entry.input)
    jsonschema.validate(entry.input, SCHEMA)
    assert verdict.status in (200, 403)
    if verdict.allowed:
        assert verdict.set_headers["x-tiermesh-tenant"] == "broke"
    for name in CREDENTIAL_HEADERS:
        assert name in verdict.remove_headers


async def test_a_valid_key_is_allowed_and_routed_as_its_tenant(rig: Rig) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=REQUIRED)
    headers = {**bearer(ACME_KEY), "x-tiermesh-tenant": "broke",
               "x-tiermesh-sensitivity": "public"}  # fmt: skip
    verdict = await rig.authorizer.decide(check(headers))
    assert (verdict.outcome, verdict.status) == ("allow", 200)
    assert verdict.set_headers["x-tiermesh-tenant"] == "acme"
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "public"
    assert "authorization" in verdict.remove_headers


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "no credential"),
        (bearer("tmk_0123"), "malformed API key"),
        (bearer(new_api_key()[0]), "unknown API key"),
        (bearer(OLD_KEY), "revoked API key"),
    ],
)
async def test_no_valid_key_is_401_recorded_and_not_evaluated(
    rig: Rig, headers: dict[str, str], problem: str
) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=REQUIRED)
    verdict = await rig.authorizer.decide(
        check({**headers, "x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"})
    )
    assert (verdict.outcome, verdict.status, verdict.allowed) == ("deny", 401, False)
    body = json.loads(verdict.denial_body())
    assert body["error"] == "unauthenticated"
    assert body["reason"] == problem
    assert body["decision_id"] == str(verdict.decision_id)
    (entry,) = rig.sink.entries
    assert entry.result["status"] == 401
    assert entry.result["reason"] == problem
    assert entry.result["policy_answer"] is None
    assert entry.result["allow"] is False
    jsonschema.validate(entry.input, SCHEMA)
    assert "authorization" not in json.dumps(entry.input)


async def test_without_keys_required_the_header_still_names_the_tenant(rig: Rig) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=OPTIONAL)
    verdict = await rig.authorizer.decide(
        check(
            {
                "x-tiermesh-tenant": "acme",
                "x-tiermesh-sensitivity": "public",
                "authorization": "Bearer sk-no-key-required",
            }
        )
    )
    assert verdict.status == 200
    assert "x-tiermesh-tenant" not in verdict.set_headers
    assert "authorization" not in verdict.remove_headers
    (entry,) = rig.sink.entries
    assert entry.input["tenant"] == "acme"
    assert "credential" not in entry.input


async def test_the_nodes_own_reentry_is_decided_on_the_tenant_already_set(rig: Rig) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=REQUIRED)
    rig.authorizer.trust_reentry("X-Tiermesh-Cascade-Token", "s3cret-token")
    step = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}

    reentered = await rig.authorizer.decide(
        check({**step, "x-tiermesh-cascade-token": "s3cret-token"})
    )
    forged = await rig.authorizer.decide(check({**step, "x-tiermesh-cascade-token": "guess"}))

    assert reentered.status == 200
    assert forged.status == 401
    assert rig.sink.entries[0].input["tenant"] == "acme"
    assert "credential" not in rig.sink.entries[0].input


async def test_only_the_nodes_own_step_request_names_a_cascade_step(rig: Rig) -> None:
    """The per-step routes match ext_authz's metadata: a step request carrying the secret
    gets its step; a client's step header (no secret, a wrong one, or a denied request)
    gets none, so it can never pick a step of a chain."""
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=OPTIONAL)
    rig.authorizer.trust_reentry("x-tiermesh-cascade-token", "s3cret-token")
    step = {
        "x-tiermesh-tenant": "acme",
        "x-tiermesh-sensitivity": "public",
        "x-tiermesh-cascade-step": "1",
    }
    own = await rig.authorizer.decide(check({**step, "x-tiermesh-cascade-token": "s3cret-token"}))
    client = await rig.authorizer.decide(check(step))
    guessed = await rig.authorizer.decide(check({**step, "x-tiermesh-cascade-token": "guess"}))
    odd = await rig.authorizer.decide(
        check(
            {
                **step,
                "x-tiermesh-cascade-step": "1 or 2",
                "x-tiermesh-cascade-token": "s3cret-token",
            }
        )
    )
    denied = await rig.authorizer.decide(
        check({"x-tiermesh-cascade-step": "0", "x-tiermesh-cascade-token": "s3cret-token"})
    )

    assert own.status == 200
    assert own.metadata == {"tiermesh_cascade_step": "1"}
    assert (client.status, client.metadata) == (200, {})
    assert (guessed.status, guessed.metadata) == (200, {})
    assert (odd.status, odd.metadata) == (200, {})
    assert denied.status == 403
    assert denied.metadata == {}


async def test_the_step_travels_as_ext_authz_dynamic_metadata(rig: Rig) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=OPTIONAL)
    rig.authorizer.trust_reentry("x-tiermesh-cascade-token", "s3cret-token")
    verdict = await rig.authorizer.decide(
        check(
            {
                "x-tiermesh-tenant": "acme",
                "x-tiermesh-sensitivity": "public",
                "x-tiermesh-cascade-step": "0",
                "x-tiermesh-cascade-token": "s3cret-token",
            }
        )
    )
    response = to_check_response(verdict)
    assert dict(response.dynamic_metadata) == {"tiermesh_cascade_step": "0"}
    plain = await rig.authorizer.decide(
        check({"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"})
    )
    assert not to_check_response(plain).HasField("dynamic_metadata")


async def test_a_part_of_an_admitted_request_is_decided_as_the_tenant_given(rig: Rig) -> None:
    # a batch line: the node admitted the submission with acme's key; the line carries no
    # key of its own, and whatever tenant or key it names is not the one decided
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=REQUIRED)
    headers = {"x-tiermesh-tenant": "broke", "x-tiermesh-sensitivity": "public",
               **bearer(BROKE_KEY)}  # fmt: skip
    verdict = await rig.authorizer.decide(check(headers), tenant="acme")
    assert (verdict.outcome, verdict.status) == ("allow", 200)
    (entry,) = rig.sink.entries
    assert entry.input["tenant"] == "acme"
    assert "credential" not in entry.input
    assert entry.input["budget"]["exhausted"] is False  # acme's budget, not broke's
    assert BROKE.secret not in json.dumps(entry.input)
