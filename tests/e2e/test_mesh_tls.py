"""Node-to-node mTLS in the running mesh (``tiermesh up``): a restricted request the plan
sends to the private tier crosses from the edge's Envoy to the private node's inbound
mTLS listener (the edge presents its SVID, the private node its own, pinned by SAN), and
the private node's Envoy counts the handshakes on that listener, which binds the address
of the node's ``mesh_listen`` and admits the edge's SPIFFE ID, never the cloud gateway's.
The private node's own ext_authz decides and records the hop (and the edge's health
checks, as probes); the records reach the control plane's audit database."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.agent_support import audit_cli, chat
from tests.e2e.up_support import CHILD_ENV, Up, running_up
from tiermesh.procs.envoy import admin_request

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]
# ``code`` (complexity 3) is beyond the edge model (max 1); acme keeps restricted data off
# the cloud, so the plan's chain is the on-prem backend behind private-1, then the edge.
RESTRICTED_CODE = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "code",
                   "x-tiermesh-sensitivity": "restricted"}  # fmt: skip
PRIVATE_ID = "spiffe://tiermesh.local/node/private-1"
SHIPPED_WITHIN_S = 15.0
"""Decision records reach the control plane's audit database within this."""
PRIVATE_WITHIN_S = 60.0
"""The private backend's host counts as healthy after two passed health checks (over the
same mTLS listener, every 10 s); until then the chain's next step, the edge, answers."""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-mesh-tls") / "state") as running:
        yield running


def _handshakes(up: Up) -> int:
    private = up.mesh["nodes"]["private-1"]
    status, body = admin_request(
        private["envoy_admin"], "/stats?filter=ssl%5C.handshake%24", timeout=10
    )
    assert status == 200
    text = body.decode()
    found = re.search(rf"^listener\.[0-9.]+_{private['mesh_port']}\.ssl\.handshake: (\d+)$",
                      text, re.MULTILINE)  # fmt: skip
    assert found, f"no handshake counter of the mesh listener in:\n{text}"
    return int(found.group(1))


def test_the_private_backend_is_the_private_nodes_mtls_listener(up: Up) -> None:
    catalog = yaml.safe_load((up.state / "policies" / "data" / "catalog.yaml").read_text())
    private = {b["name"]: b for b in catalog["backends"]}["onprem-gpu"]
    assert private["endpoint"] == {"host": "127.0.0.1",
                                   "port": up.mesh["nodes"]["private-1"]["mesh_port"],
                                   "tls": True}  # fmt: skip
    assert private["spiffe_id"] == "spiffe://tiermesh.local/node/private-1"
    assert private["node"] == "private-1"


def test_a_restricted_request_reaches_the_private_tier_over_mtls(up: Up) -> None:
    deadline = time.monotonic() + PRIVATE_WITHIN_S
    last: tuple[int, dict[str, str], bytes] = (0, {}, b"")
    while time.monotonic() < deadline:
        last = chat(up.port, up.keyed(RESTRICTED_CODE), timeout=20)
        if last[0] == 200 and last[1].get("x-tiermesh-tier") == "private":
            break
        time.sleep(0.3)
    status, headers, body = last
    assert status == 200, last
    assert headers["x-tiermesh-tier"] == "private", headers
    assert _handshakes(up) > 0
    before = _handshakes(up)
    for _ in range(2):
        status, headers, body = chat(up.port, up.keyed(RESTRICTED_CODE), timeout=20)
        assert status == 200, body
        assert headers["x-tiermesh-tier"] == "private", headers
    assert _handshakes(up) >= before


def _listeners(admin: str) -> dict[str, Any]:
    status, body = admin_request(admin, "/config_dump?resource=dynamic_listeners", timeout=10)
    assert status == 200
    return {
        entry["name"]: entry["active_state"]["listener"]
        for entry in json.loads(body)["configs"]
        if "active_state" in entry
    }


def test_the_private_mesh_listener_binds_mesh_listen_and_admits_the_edge_alone(up: Up) -> None:
    private = up.mesh["nodes"]["private-1"]
    # Whom it admits follows the registrations: settled once every node has registered.
    deadline = time.monotonic() + PRIVATE_WITHIN_S
    listeners = _listeners(private["envoy_admin"])
    while "tiermesh_mesh_in" not in listeners and time.monotonic() < deadline:
        time.sleep(0.5)
        listeners = _listeners(private["envoy_admin"])
    mesh = listeners["tiermesh_mesh_in"]
    assert mesh["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": private["mesh_port"],
    }  # fmt: skip
    (chain,) = mesh["filter_chains"]
    context = chain["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    validation = context["common_tls_context"]["combined_validation_context"]
    sans = validation["default_validation_context"]["match_typed_subject_alt_names"]
    assert sans == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://tiermesh.local/node/edge-1"}}
    ]


def _private_records(up: Up) -> list[dict[str, Any]]:
    """The private node's request decisions in the control plane's audit database."""
    found = audit_cli("query", "--db", str(up.mesh["control_plane"]["audit_db"]),
                      "--node", PRIVATE_ID, "--kind", "request", "--json",
                      env=CHILD_ENV)  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr
    return [json.loads(line) for line in found.stdout.splitlines() if line.strip()]


def test_the_private_node_decides_and_records_the_edges_request(up: Up) -> None:
    """The mesh hop passes the private node's own ext_authz: its record names the edge
    (the peer's SPIFFE ID), the tenant the edge authenticated, and the edge's decision."""
    deadline = time.monotonic() + PRIVATE_WITHIN_S
    while time.monotonic() < deadline:
        status, headers, body = chat(up.port, up.keyed(RESTRICTED_CODE), timeout=20)
        if status == 200 and headers.get("x-tiermesh-tier") == "private":
            break
        time.sleep(0.3)
    assert (status, headers.get("x-tiermesh-tier")) == (200, "private"), (status, headers, body)
    edge_decision = headers["x-tiermesh-decision-id"]
    hop: dict[str, Any] | None = None
    shipped_by = time.monotonic() + SHIPPED_WITHIN_S
    while hop is None and time.monotonic() < shipped_by:
        hop = next(
            (r for r in _private_records(up)
             if r["input"].get("peer", {}).get("decision_id") == edge_decision),
            None,
        )  # fmt: skip
        if hop is None:
            time.sleep(0.5)
    assert hop is not None, f"no record of decision {edge_decision}'s hop on private-1"
    assert hop["input"]["peer"]["spiffe_id"] == "spiffe://tiermesh.local/node/edge-1"
    assert hop["input"]["tenant"] == "acme"
    assert "credential" not in hop["input"]
    assert hop["result"]["outcome"] == "allow"
    assert hop["result"]["sensitivity"] == "restricted"
    # The edge's health checks of the private node are probes there, and pass.
    probes = [r for r in _private_records(up) if r["input"].get("peer", {}).get("probe")]
    assert probes, "no health probe recorded on private-1"
    assert {r["result"]["outcome"] for r in probes} == {"allow"}
