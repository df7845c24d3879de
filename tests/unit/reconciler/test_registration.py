"""Node registrations read as plan inputs."""

from __future__ import annotations

import pytest

from tiermesh.controlplane.reconciler import InvalidRegistration, node_from_registration
from tiermesh.controlplane.store import NodeRecord


def record(raw: bytes, node_id: str = "n1") -> NodeRecord:
    return NodeRecord(node_id, raw, lease_id=1, mod_revision=2)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "n1", "tier": "local", "region": "eu", "residency": ["eu"]}',
        b'{"tier": "local", "region": "eu", "residency": ["eu"], "load": 3}',
        b'{"version": "v1", "node": {"id": "n1", "tier": "local", "region": "eu",'
        b' "residency": ["eu"]}}',
    ],
)
def test_registration_shapes(raw: bytes) -> None:
    node = node_from_registration(record(raw))
    assert (node.id, node.tier, node.region, node.residency) == ("n1", "local", "eu", ("eu",))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"id": "n2", "tier": "local", "region": "eu"}', "claims id 'n2'"),
        (b'{"tier": "moon", "region": "eu"}', "tier"),
        (b'{"tier": "local"}', "region"),
    ],
)
def test_bad_registrations(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRegistration, match=reason) as caught:
        node_from_registration(record(raw))
    assert caught.value.node_id == "n1"
