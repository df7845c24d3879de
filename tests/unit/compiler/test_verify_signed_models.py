"""require_signed_models in the verifier (on the compiled Envoy config) and in the routing
policy (the plan leaves unsigned backends out of that traffic's chains)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import MeshModel
from tiermesh.controlplane.verify import compile_and_verify, verify_snapshot

RESTRICTED = "acme.restricted.classify.*"  # chain edge-smollm → onprem-gpu in the demo

KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _demanding(catalog: Catalog, signed: set[str]) -> Catalog:
    document = catalog.model_dump(mode="json")
    document["defaults"]["require_signed_models"] = ["restricted"]
    for backend in document["backends"]:
        if backend["name"] in signed:
            backend["signers"] = [{"public_key": KEY}]
    return Catalog.model_validate(document)


def test_restricted_routes_to_an_unsigned_backend_are_findings(
    edge_model: MeshModel, catalog: Catalog
) -> None:
    snapshot = compile_snapshot(edge_model, EDGE)  # planned without the demand
    assert verify_snapshot(snapshot, catalog) == []
    found = verify_snapshot(snapshot, _demanding(catalog, {"edge-smollm"}))
    assert found
    assert {(f.kind, f.cluster) for f in found} == {("unsigned-model", "onprem-gpu")}
    assert RESTRICTED in {f.route for f in found}
    assert all("internal" not in f.route and "public" not in f.route for f in found)
    message = next(f.message for f in found if f.route == RESTRICTED)
    assert "reaches backend 'onprem-gpu', which names no model signers" in message


def test_every_backend_signed_leaves_nothing_to_find(
    edge_model: MeshModel, catalog: Catalog
) -> None:
    snapshot = compile_snapshot(edge_model, EDGE)
    assert verify_snapshot(snapshot, _demanding(catalog, {"edge-smollm", "onprem-gpu"})) == []


def test_the_routing_policy_plans_what_the_verifier_accepts(catalog: Catalog) -> None:
    demanding = _demanding(catalog, {"edge-smollm"})
    plan = evaluate_plan(demanding)
    chains = {route.name: [step.backend for step in route.chain] for route in plan.routes}
    assert chains[RESTRICTED] == ["edge-smollm"]
    assert "onprem-gpu" in chains["acme.internal.classify.*"]
    model = MeshModel.build([plan], {EDGE: EDGE_SETTINGS})
    compile_and_verify(model, EDGE, demanding)  # raises on any finding
