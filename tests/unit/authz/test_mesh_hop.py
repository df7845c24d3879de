"""Requests from another node (the mesh listener's checks): who the caller is, which
tenant counts, and what a peer cannot forge."""

from __future__ import annotations

import uuid

import jsonschema
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from tests.unit.authz.conftest import Rig
from tests.unit.authz.test_authorizer import PROMPT, SCHEMA, chat
from tests.unit.authz.test_tenant_keys import ACME, ACME_KEY, REQUIRED, bearer
from tiermesh.agents.authz import CREDENTIAL_HEADERS, DECISION_ID_HEADER, CheckInput
from tiermesh.agents.authz.mesh_hop import peer_problem
from tiermesh.agents.authz.server import to_check_input, to_check_response
from tiermesh.controlplane.api import (
    MESH_HOP_CONTEXT,
    MESH_HOP_KEY,
    MESH_PROBE_CONTEXT,
    MESH_PROBE_KEY,
)

EDGE_ID = "spiffe://tiermesh.test/node/edge-1"
PATH = "/v1/chat/completions"


def mesh(body: bytes = b"", peer: str = EDGE_ID, **headers: str) -> CheckInput:
    named = {f"x-tiermesh-{k.replace('_', '-')}": v for k, v in headers.items()}
    return CheckInput("POST", PATH, named, body, hop="mesh", peer=peer)


@pytest.fixture
def keyed(rig: Rig) -> Rig:
    """Tenant keys required, as ``tiermesh up`` ships the policy."""
    rig.authorizer.use_policy(rig.engine, bundle_revision="b1", keys=REQUIRED)
    return rig


# -- what the server reads from Envoy ---------------------------------------------------


def _check(context: dict[str, str], principal: str, **headers: str) -> CheckInput:
    request = external_auth_pb2.CheckRequest()
    request.attributes.context_extensions.update(context)
    request.attributes.source.principal = principal
    http = request.attributes.request.http
    http.method, http.path = "POST", PATH
    http.headers.update(headers)
    return to_check_input(request)


def test_a_check_is_a_mesh_hop_only_by_the_listeners_context() -> None:
    hop = _check(dict(MESH_HOP_CONTEXT), EDGE_ID)
    assert (hop.hop, hop.peer) == ("mesh", EDGE_ID)
    # What a client can send (headers) never makes an app request a mesh hop.
    app = _check({}, EDGE_ID, **{MESH_HOP_KEY: "mesh", "x-tiermesh-hop": "mesh"})
    assert (app.hop, app.peer) == ("app", "")
    other = _check({MESH_HOP_KEY: "app"}, EDGE_ID)
    assert (other.hop, other.peer) == ("app", "")


# -- the decision ------------------------------------------------------------------------


async def test_a_mesh_hop_is_decided_for_the_forwarded_tenant_without_a_key(keyed: Rig) -> None:
    verdict = await keyed.authorizer.decide(
        mesh(chat("hello"), tenant="acme", sensitivity="public")
    )
    assert (verdict.outcome, verdict.status) == ("allow", 200)
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "public"
    (entry,) = keyed.sink.entries
    assert entry.input["peer"] == {"spiffe_id": EDGE_ID}
    assert entry.input["tenant"] == "acme"
    assert "credential" not in entry.input
    assert entry.result["policy_answer"] is not None
    jsonschema.validate(entry.input, SCHEMA)


async def test_the_same_request_on_the_app_listener_needs_its_key(keyed: Rig) -> None:
    app = CheckInput("POST", PATH, {"x-tiermesh-tenant": "acme"}, chat("hello"))
    verdict = await keyed.authorizer.decide(app)
    assert verdict.status == 401
    (entry,) = keyed.sink.entries
    assert "peer" not in entry.input


async def test_personal_data_labelled_public_is_raised_and_recorded(keyed: Rig) -> None:
    verdict = await keyed.authorizer.decide(mesh(chat(PROMPT), tenant="acme", sensitivity="public"))
    # A local model may answer restricted data: allowed, but labelled and recorded so.
    assert verdict.outcome == "allow"
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "restricted"
    (entry,) = keyed.sink.entries
    assert entry.result["sensitivity"] == "restricted"
    assert entry.result["floor"]["sensitivity"] == "restricted"
    assert entry.result["floor"]["reasons"]
    assert PROMPT not in str(entry.input)
    jsonschema.validate(entry.input, SCHEMA)


async def test_owned_headers_a_peer_forges_never_survive(keyed: Rig) -> None:
    sent = str(uuid.uuid4())
    verdict = await keyed.authorizer.decide(
        mesh(
            chat("hello"),
            tenant="acme",
            sensitivity="public",
            budget="exhausted",
            decision_id=sent,
        )
    )
    assert verdict.set_headers[DECISION_ID_HEADER] == str(verdict.decision_id) != sent
    assert "x-tiermesh-budget" in verdict.remove_headers  # acme's budget is not spent
    (entry,) = keyed.sink.entries
    # The sending node's decision id links the two records; it is not this one's.
    assert entry.input["peer"] == {"spiffe_id": EDGE_ID, "decision_id": sent}
    assert entry.decision_id == verdict.decision_id
    jsonschema.validate(entry.input, SCHEMA)


async def test_a_decision_id_that_is_no_uuid_is_left_out(keyed: Rig) -> None:
    await keyed.authorizer.decide(
        mesh(chat("hello"), tenant="acme", sensitivity="public", decision_id="jane@example.com")
    )
    (entry,) = keyed.sink.entries
    assert entry.input["peer"] == {"spiffe_id": EDGE_ID}


async def test_a_key_a_peer_sends_is_neither_checked_nor_forwarded(keyed: Rig) -> None:
    check = mesh(chat("hello"), tenant="broke", sensitivity="public")
    check = CheckInput(
        check.method, check.path, {**check.headers, **bearer(ACME_KEY)}, check.body, hop="mesh",
        peer=EDGE_ID,
    )  # fmt: skip
    verdict = await keyed.authorizer.decide(check)
    assert verdict.outcome == "allow"
    assert set(CREDENTIAL_HEADERS) <= set(verdict.remove_headers)
    assert "x-tiermesh-tenant" not in verdict.set_headers
    (entry,) = keyed.sink.entries
    assert entry.input["tenant"] == "broke"  # the forwarded tenant, not the key's
    assert "credential" not in entry.input
    assert ACME.key_id not in str(entry.input)
    assert entry.input["budget"]["exhausted"] is True  # broke's own budget is read


async def test_a_mesh_hop_without_a_tenant_is_denied_by_the_policy(keyed: Rig) -> None:
    verdict = await keyed.authorizer.decide(mesh(chat("hello"), sensitivity="public"))
    assert (verdict.outcome, verdict.status) == ("deny", 403)
    assert "no tenant" in verdict.decision["reason"]
    response = to_check_response(verdict)
    assert response.denied_response.status.code == 403


@pytest.mark.parametrize(
    ("peer", "problem"),
    [
        ("", "mesh hop without a verified peer identity"),
        ("CN=edge-1", "mesh hop whose peer identity is not a SPIFFE ID"),
        ("spiffe://tiermesh.test", "mesh hop whose peer identity is not a SPIFFE ID"),
        (
            "spiffe://tiermesh.test/node/" + "a" * 2048,
            "mesh hop whose peer identity is not a SPIFFE ID",
        ),
    ],
)
async def test_a_mesh_hop_without_a_spiffe_peer_is_denied_unasked(
    keyed: Rig, peer: str, problem: str
) -> None:
    assert peer_problem(peer) == problem
    verdict = await keyed.authorizer.decide(
        mesh(chat("hello"), peer=peer, tenant="acme", sensitivity="public")
    )
    assert (verdict.outcome, verdict.status) == ("deny", 403)
    (entry,) = keyed.sink.entries
    assert entry.result["reason"] == problem
    assert entry.result["policy_answer"] is None
    assert entry.input["peer"]["spiffe_id"] == peer


def test_a_well_formed_peer_passes() -> None:
    assert peer_problem(EDGE_ID) is None


# -- a peer's health check -----------------------------------------------------------------


def test_a_probe_is_marked_only_on_a_mesh_hop() -> None:
    probe = _check(dict(MESH_PROBE_CONTEXT), EDGE_ID)
    assert (probe.hop, probe.probe) == ("mesh", True)
    app = _check({MESH_PROBE_KEY: "health"}, EDGE_ID)
    assert (app.hop, app.probe) == ("app", False)


def probe(method: str = "GET", path: str = "/health", body: bytes = b"") -> CheckInput:
    return CheckInput(method, path, {}, body, hop="mesh", peer=EDGE_ID, probe=True)


async def test_a_health_probe_is_allowed_without_tenant_or_policy_and_recorded(
    keyed: Rig,
) -> None:
    verdict = await keyed.authorizer.decide(probe())
    assert (verdict.outcome, verdict.status) == ("allow", 200)
    (entry,) = keyed.sink.entries
    assert entry.input["peer"] == {"spiffe_id": EDGE_ID, "probe": True}
    assert entry.result["reason"] == "health probe of a mesh peer"
    assert entry.result["policy_answer"] is None
    jsonschema.validate(entry.input, SCHEMA)


@pytest.mark.parametrize(
    "request_",
    [
        probe(method="POST"),
        probe(body=b"{}"),
        probe(path="/health?email=jane@example.com"),
    ],
    ids=["post", "body", "query"],
)
async def test_anything_but_a_bare_get_on_a_probe_route_is_denied(
    keyed: Rig, request_: CheckInput
) -> None:
    verdict = await keyed.authorizer.decide(request_)
    assert (verdict.outcome, verdict.status) == ("deny", 403)
    assert verdict.decision["reason"] == "a probe route takes only a GET without body or query"


async def test_a_probe_without_a_peer_is_denied(keyed: Rig) -> None:
    request_ = CheckInput("GET", "/health", {}, b"", hop="mesh", peer="", probe=True)
    verdict = await keyed.authorizer.decide(request_)
    assert verdict.status == 403


async def test_the_probe_flag_means_nothing_on_the_app_listener(keyed: Rig) -> None:
    verdict = await keyed.authorizer.decide(CheckInput("GET", "/health", {}, b"", probe=True))
    assert verdict.status == 401  # a tenant key is still required
