"""Tenant JWTs in the running mesh (``tiermesh up``): a pushed catalog naming a JWT issuer
(its key set served by a loopback JWKS server) makes the edge accept that issuer's tokens
as their tenant, whatever ``x-tiermesh-tenant`` says, and refuse a bad one with a 401 and a
decision record, without restarting anything."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import yaml

from tests.e2e.agent_support import TIERMESH, audit_cli, chat_text
from tests.e2e.up_support import CHILD_ENV, Up, running_up
from tests.support.jwks import JwksServer, SigningKey

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]
ISSUER = "https://sso.e2e.example/"
AUDIENCE = "tiermesh-e2e"
ADOPTED_WITHIN_S = 60.0
SHIPPED_WITHIN_S = 15.0
PUBLIC = {"x-tiermesh-sensitivity": "public"}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-jwt") / "state") as running:
        yield running


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture(scope="module")
def jwks(key: SigningKey) -> Iterator[JwksServer]:
    server = JwksServer(key)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pushed(up: Up, jwks: JwksServer, tmp_path_factory: pytest.TempPathFactory) -> Up:
    """The mesh after a push of its own policies with one JWT issuer added."""
    changed = tmp_path_factory.mktemp("policies") / "policies"
    shutil.copytree(up.state / "policies", changed)
    catalog_file = changed / "data" / "catalog.yaml"
    catalog = yaml.safe_load(catalog_file.read_text())
    catalog["jwt_issuers"] = [
        {
            "name": "e2e-sso",
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "remote_jwks": {"uri": jwks.uri, "cache_duration_s": 60},
            "tenant_claim": ["org", "name"],
        }
    ]
    catalog_file.write_text(yaml.safe_dump(catalog))
    mesh = up.mesh
    result = subprocess.run(
        [TIERMESH, "policy", "push", str(changed), "--etcd", mesh["etcd"]["endpoint"],
         "--root", mesh["etcd"]["root"]],
        capture_output=True, text=True, timeout=120, check=False, env=CHILD_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return up


def _token(key: SigningKey, tenant: str, **claims: object) -> str:
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "e2e-client", "org": {"name": tenant}}
    return key.token({**body, **claims})


def _send(up: Up, token: str | None, **headers: str) -> tuple[int, dict[str, str], bytes]:
    auth = {} if token is None else {"authorization": f"Bearer {token}"}
    return chat_text(up.port, {**PUBLIC, **auth, **headers}, "hello", timeout=30)


def _shipped(up: Up, decision_id: str) -> dict[str, object]:
    db = str(up.mesh["control_plane"]["audit_db"])
    deadline = time.monotonic() + SHIPPED_WITHIN_S
    last = ""
    while time.monotonic() < deadline:
        found = audit_cli("query", "--db", db, "--decision-id", decision_id, "--json",
                          env=CHILD_ENV)  # fmt: skip
        lines = [line for line in found.stdout.splitlines() if line.strip()]
        if found.returncode == 0 and lines:
            return dict(json.loads(lines[0]))
        last = found.stdout + found.stderr
        time.sleep(0.3)
    raise AssertionError(f"decision {decision_id} not shipped in {SHIPPED_WITHIN_S}s: {last}")


@dataclass
class Adopted:
    up: Up
    token: str
    decision_id: str


@pytest.fixture(scope="module")
def adopted(pushed: Up, key: SigningKey) -> Adopted:
    """The first answer to a token of the pushed issuer (acme's, the header naming globex)
    once the edge adopted the push: 200 within :data:`ADOPTED_WITHIN_S`."""
    token = _token(key, "acme")
    deadline = time.monotonic() + ADOPTED_WITHIN_S
    status, headers, body = _send(pushed, token, **{"x-tiermesh-tenant": "globex"})
    while status != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        status, headers, body = _send(pushed, token, **{"x-tiermesh-tenant": "globex"})
    assert status == 200, body
    return Adopted(pushed, token, headers["x-tiermesh-decision-id"])


def test_a_pushed_issuer_authenticates_its_tokens_as_their_tenant(adopted: Adopted) -> None:
    record = _shipped(adopted.up, adopted.decision_id)
    document = record["input"]
    assert isinstance(document, dict)
    assert document["tenant"] == "acme"
    assert document["credential"] == {
        "kind": "jwt",
        "id": f"{ISSUER}#e2e-client",
        "issuer": "e2e-sso",
    }
    assert adopted.token not in json.dumps(record)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda key: _token(key, "acme", exp=int(time.time()) - 600), "expired JWT"),
        (lambda key: _token(SigningKey(key.kid), "acme"), "JWT signature invalid"),
        (lambda key: _token(key, "acme", aud="other"), "JWT audience not accepted"),
        (lambda key: _token(key, "nobody"), "JWT names an unknown tenant"),
        (lambda key: None, "no credential"),
    ],
    ids=["expired", "forged", "audience", "unknown-tenant", "none"],
)
def test_a_bad_token_is_refused_and_recorded(
    adopted: Adopted, key: SigningKey, make: Callable[[SigningKey], str | None], problem: str
) -> None:
    status, _, body = _send(adopted.up, make(key), **{"x-tiermesh-tenant": "acme"})
    assert status == 401, body
    answer = json.loads(body)
    assert answer["reason"] == problem
    record = _shipped(adopted.up, answer["decision_id"])
    result = record["result"]
    assert isinstance(result, dict)
    assert (result["status"], result["reason"]) == (401, problem)


def test_tenant_api_keys_still_authenticate(adopted: Adopted) -> None:
    up = adopted.up
    status, _, body = chat_text(up.port, up.keyed(PUBLIC), "hello", timeout=30)
    assert status == 200, body
