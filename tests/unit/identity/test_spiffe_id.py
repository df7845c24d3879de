"""Node id and trust domain rules, and the names derived from them."""

from __future__ import annotations

import pytest

from tiermesh.controlplane.identity import (
    IdentityError,
    InvalidNodeIdError,
    InvalidTrustDomainError,
    NodeIdentity,
    parse_node_spiffe_id,
    validate_node_id,
    validate_trust_domain,
)


@pytest.mark.parametrize("node_id", ["a", "edge-1", "gpu0", "x" * 63, "0-a"])
def test_valid_node_ids(node_id: str) -> None:
    assert validate_node_id(node_id) == node_id


@pytest.mark.parametrize(
    "node_id",
    ["", "Edge-1", "edge_1", "edge.1", "-edge", "edge-", "x" * 64, "a/b", "../x", "é", "a b"],
)
def test_invalid_node_ids(node_id: str) -> None:
    with pytest.raises(InvalidNodeIdError) as info:
        validate_node_id(node_id)
    assert isinstance(info.value, IdentityError)
    assert "invalid node id" in str(info.value)


@pytest.mark.parametrize("td", ["example.org", "mesh.example", "a", "a-b.c-d.e"])
def test_valid_trust_domains(td: str) -> None:
    assert validate_trust_domain(td) == td


@pytest.mark.parametrize(
    "td",
    ["", "Example.org", "ex_ample.org", "a..b", ".a", "a.", "-a.b", "a" * 64, ".".join(["a"] * 91)],
)
def test_invalid_trust_domains(td: str) -> None:
    with pytest.raises(InvalidTrustDomainError):
        validate_trust_domain(td)


def test_node_identity_names() -> None:
    ident = NodeIdentity("mesh.example", "edge-1")
    assert ident.spiffe_id == "spiffe://mesh.example/node/edge-1"
    assert ident.dns_name == "edge-1.node.mesh.example"
    with pytest.raises(InvalidNodeIdError):
        NodeIdentity("mesh.example", "Edge")


def test_parse_node_spiffe_id() -> None:
    assert parse_node_spiffe_id("spiffe://mesh.example/node/edge-1", "mesh.example") == "edge-1"
    assert parse_node_spiffe_id("spiffe://other.example/node/edge-1", "mesh.example") is None
    assert parse_node_spiffe_id("spiffe://mesh.example/workload/x", "mesh.example") is None
    assert parse_node_spiffe_id("spiffe://mesh.example/node/a/b", "mesh.example") is None
    assert parse_node_spiffe_id("spiffe://mesh.example/node/", "mesh.example") is None
