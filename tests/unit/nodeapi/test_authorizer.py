"""The SPIFFE node authorizer as a table over what grpc's auth context can hold."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest
from envoy.config.core.v3 import base_pb2

from tiermesh.controlplane.identity import InvalidTrustDomainError
from tiermesh.controlplane.identity.peer import peer_chain_pem, peer_spiffe_id
from tiermesh.controlplane.identity.xds_auth import spiffe_node_authorizer


class FakeContext:
    def __init__(self, properties: Mapping[str, Iterable[bytes]]) -> None:
        self.properties = properties

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self.properties


@pytest.mark.parametrize(
    ("properties", "claim", "refusal"),
    [
        ({"peer_spiffe_id": [b"spiffe://mesh.example/node/a"]}, "a", None),
        ({"peer_spiffe_id": [b"spiffe://mesh.example/node/a"]}, "b", "may not claim"),
        ({}, "a", "no verified client SVID"),
        ({"peer_spiffe_id": [b"spiffe://other.example/node/a"]}, "a", "not a node"),
        ({"peer_spiffe_id": [b"spiffe://mesh.example/controlplane"]}, "a", "not a node"),
        ({"peer_spiffe_id": [b"spiffe://mesh.example/node/A"]}, "A", "not a node"),
        ({"peer_spiffe_id": [b"spiffe://mesh.example/node/a"] * 2}, "a", "no verified"),
        ({"peer_spiffe_id": [b"\xff"]}, "a", "no verified"),
    ],
)
def test_authorizer(
    properties: Mapping[str, Iterable[bytes]], claim: str, refusal: str | None
) -> None:
    authorize = spiffe_node_authorizer("mesh.example")
    result = authorize(base_pb2.Node(id=claim), FakeContext(properties))  # type: ignore[arg-type]
    if refusal is None:
        assert result is None
    else:
        assert result is not None
        assert refusal in result


def test_a_bad_trust_domain_is_refused_up_front() -> None:
    with pytest.raises(InvalidTrustDomainError):
        spiffe_node_authorizer("Mesh Example")


def test_peer_chain_needs_exactly_one_leaf() -> None:
    assert peer_chain_pem(FakeContext({})) is None
    chain = peer_chain_pem(FakeContext({"x509_pem_cert": [b"L\n"], "x509_pem_cert_chain": [b"I"]}))
    assert chain == b"L\n\nI"
    assert peer_spiffe_id(FakeContext({})) is None
