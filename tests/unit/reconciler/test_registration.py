"""Node registrations read as plan inputs."""

from __future__ import annotations

import json

import pytest

from tests.unit.reconciler.conftest import Rig
from tests.unit.reconciler.policyfiles import node_registration
from tiermesh.controlplane.reconciler import InvalidRegistration, node_from_registration
from tiermesh.controlplane.reconciler import reconciler as reconciler_module
from tiermesh.controlplane.reconciler.registration import Registration, read_registration
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


async def test_a_full_reconcile_decodes_only_registrations_that_changed(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push re-reads every registration; those read as before are not decoded again."""
    decoded: list[str] = []

    def counted(record: NodeRecord) -> Registration:
        decoded.append(record.node_id)
        return read_registration(record)

    monkeypatch.setattr(reconciler_module, "read_registration", counted)
    await rig.reconciler.start()
    leases = {
        node: await rig.store.register_node(node, node_registration(node), ttl_s=600)
        for node in ("edge-1", "edge-2", "edge-3")
    }
    await rig.push()
    assert (await rig.reconciler.reconcile_now()).ok
    decoded.clear()
    assert (await rig.reconciler.reconcile_now()).ok
    assert decoded == []
    unwell = json.loads(node_registration("edge-2")) | {"load": {"healthy": False}}
    await rig.store.update_node(leases["edge-2"], json.dumps(unwell).encode())
    result = await rig.reconciler.reconcile_now()
    assert result.ok
    assert decoded == ["edge-2"]
    assert result.unhealthy == ("edge-2",)  # the new registration was read
