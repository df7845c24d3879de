"""Tenant API keys through a real Envoy: the credential, not the header, names the tenant;
no valid key is a 401 with a record and no backend reached."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.authz.conftest import (
    AuthzMesh,
    chat,
    local_only_restricted,
    run_authz_mesh,
)
from tiermesh.agents.authz import KeyTable
from tiermesh.agents.decisionlog import read_spool
from tiermesh.controlplane.api import ApiKeyEntry, Catalog, new_api_key

pytestmark = pytest.mark.envoy

ACME_KEY, ACME = new_api_key()
GLOBEX_KEY, GLOBEX = new_api_key()
REVOKED_KEY, REVOKED = new_api_key()
KEYS = KeyTable(
    (
        ApiKeyEntry(id=ACME.key_id, tenant="acme", sha256=ACME.digest),
        ApiKeyEntry(id=GLOBEX.key_id, tenant="globex", sha256=GLOBEX.digest),
        ApiKeyEntry(id=REVOKED.key_id, tenant="acme", sha256=REVOKED.digest, revoked=True),
    ),
    required=True,
)
PUBLIC_REASONING = {"x-tiermesh-sensitivity": "public", "x-tiermesh-task": "reasoning"}
CLEAN = chat("Explain the proof of Fermat's little theorem")


def with_local_only_globex(catalog: Catalog) -> Catalog:
    """``acme`` as in the small catalog; ``globex`` may use the local tier only, so the two
    tenants' public reasoning routes differ (cloud first vs. edge)."""
    catalog = local_only_restricted(catalog)
    (acme,) = catalog.tenants
    globex = acme.model_copy(
        update={"name": "globex", "allowed_tiers": ("local",), "restricted_tiers": ("local",)}
    )
    return catalog.model_copy(update={"tenants": (acme, globex)})


@pytest.fixture
def keyed_mesh(tmp_path: Path) -> Iterator[AuthzMesh]:
    with run_authz_mesh(tmp_path, with_local_only_globex) as mesh:
        mesh.authz.use_keys(KEYS)
        yield mesh


def records(mesh: AuthzMesh) -> dict[str, dict[str, object]]:
    return {
        str(s.record.decision_id): s.record.model_dump(mode="json") for s in read_spool(mesh.spool)
    }


def test_the_two_tenants_have_different_routes(keyed_mesh: AuthzMesh) -> None:
    assert keyed_mesh.chain("acme.public.reasoning.*")[0] == "cloud"
    assert keyed_mesh.chain("globex.public.reasoning.*") == ["edge"]


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "no credential"),
        ({"authorization": f"Bearer {new_api_key()[0]}"}, "unknown API key"),
        ({"x-api-key": ACME_KEY[:-2] + "zz"}, "unknown API key"),
        ({"authorization": "Bearer sk-no-key-required"}, "malformed API key"),
        ({"authorization": f"Bearer {REVOKED_KEY}"}, "revoked API key"),
    ],
)
def test_no_valid_key_is_refused_recorded_and_reaches_no_backend(
    keyed_mesh: AuthzMesh, headers: dict[str, str], problem: str
) -> None:
    reply = keyed_mesh.send({"x-tiermesh-tenant": "acme", **PUBLIC_REASONING, **headers}, CLEAN)

    assert reply.status == 401
    assert keyed_mesh.reached() == 0
    body = json.loads(reply.body)
    assert (body["error"], body["reason"]) == ("unauthenticated", problem)
    record = records(keyed_mesh)[body["decision_id"]]
    result = record["result"]
    assert isinstance(result, dict)
    assert (result["status"], result["reason"], result["allow"]) == (401, problem, False)
    text = json.dumps(record)
    for key in (ACME_KEY, REVOKED_KEY, "sk-no-key-required"):
        assert key not in text


def test_a_key_of_one_tenant_is_routed_as_that_tenant_whatever_the_header(
    keyed_mesh: AuthzMesh,
) -> None:
    as_acme = keyed_mesh.send(
        {
            "authorization": f"Bearer {ACME_KEY}",
            "x-tiermesh-tenant": "globex",
            **PUBLIC_REASONING,
        },
        CLEAN,
    )
    assert (as_acme.status, as_acme.backend, as_acme.tier) == (200, "cloud", "cloud")

    as_globex = keyed_mesh.send(
        {"x-api-key": GLOBEX_KEY, "x-tiermesh-tenant": "acme", **PUBLIC_REASONING}, CLEAN
    )
    assert (as_globex.status, as_globex.backend, as_globex.tier) == (200, "edge", "local")

    stored = records(keyed_mesh)
    acme_record, globex_record = (
        stored[str(as_acme.decision_id)],
        stored[str(as_globex.decision_id)],
    )
    assert acme_record["input"]["tenant"] == "acme"  # type: ignore[index]
    assert acme_record["input"]["credential"] == {"kind": "api_key", "id": ACME.key_id}  # type: ignore[index]
    assert globex_record["input"]["tenant"] == "globex"  # type: ignore[index]
    assert globex_record["input"]["credential"] == {"kind": "api_key", "id": GLOBEX.key_id}  # type: ignore[index]
    assert ACME_KEY not in json.dumps(acme_record)


def test_the_tenant_key_is_not_forwarded_to_the_backend(keyed_mesh: AuthzMesh) -> None:
    reply = keyed_mesh.send(
        {"authorization": f"Bearer {GLOBEX_KEY}", "x-api-key": GLOBEX_KEY, **PUBLIC_REASONING},
        CLEAN,
    )
    assert (reply.status, reply.backend) == (200, "edge")
    (seen,) = keyed_mesh.backends["edge"].requests
    assert "authorization" not in seen
    assert "x-api-key" not in seen
    assert seen["x-tiermesh-tenant"] == "globex"
