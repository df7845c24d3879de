"""The verifier refuses a restricted-reachable cluster to another node whose TLS does not
pin the peer's SPIFFE ID."""

from __future__ import annotations

from tests.integration.compiler.conftest import NODE
from tests.integration.mesh_tls.test_mesh_mtls import GPU_ID, mesh_catalog
from tests.unit.agent_identity.casource import TRUST_DOMAIN
from tests.unit.compiler.plans import TEST_AUTHZ, evaluate_plan
from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import MeshModel, MeshTlsSettings, NodeSettings
from tiermesh.controlplane.verify import verify_snapshot

PORTS = {"edge": 18001, "gpu": 18002, "cloud": 18003}
MESH = MeshTlsSettings(inbound_port=18100, model_port=18001, trust_domain=TRUST_DOMAIN)


def _findings(catalog: Catalog) -> list[str]:
    plan = evaluate_plan(catalog)
    settings = NodeSettings(app_port=18000, authz=TEST_AUTHZ, mesh=MESH)
    model = MeshModel.build([plan], {NODE: settings})
    return [f.kind for f in verify_snapshot(compile_snapshot(model, NODE), catalog)]


def test_a_pinned_mtls_cluster_to_the_other_node_passes() -> None:
    assert _findings(mesh_catalog(PORTS, 18200)) == []


def test_a_cluster_to_the_other_node_without_tls_is_a_finding() -> None:
    document = mesh_catalog(PORTS, 18200).model_dump(mode="json", exclude_none=True)
    for backend in document["backends"]:
        if backend.get("spiffe_id") == GPU_ID:
            backend["endpoint"]["tls"] = False
    assert "peer-identity" in _findings(Catalog.model_validate(document))
