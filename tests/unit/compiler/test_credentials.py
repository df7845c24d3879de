"""A backend's API key: referenced by name in the plan, served only as an SDS secret."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format

from tests.integration.flows.conftest import KEY_NAME, NODE, flow_catalog
from tests.unit.compiler.plans import TEST_AUTHZ, evaluate_plan
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import MeshModel, NodeSettings, PlanMismatch, names
from tiermesh.controlplane.verify import verify_snapshot
from tiermesh.xds import typeurls

KEY = "sk-unit-test-key"


def _dump(message: Any) -> str:
    return json.dumps(json_format.MessageToDict(message))


def test_the_key_is_served_only_as_the_backends_generic_secret() -> None:
    catalog = flow_catalog(9001, 9002)
    plan = evaluate_plan(catalog)
    assert KEY not in plan.model_dump_json()
    settings = NodeSettings(app_port=8080, authz=TEST_AUTHZ, credentials={KEY_NAME: KEY})
    snapshot = compile_snapshot(MeshModel.build([plan], {NODE: settings}), NODE)
    assert snapshot.names(typeurls.SECRET) == {names.credential_secret("cloud")}
    secret = snapshot.resource(typeurls.SECRET, names.credential_secret("cloud"))
    assert f"Bearer {KEY}" in _dump(secret)
    for type_url in (typeurls.CLUSTER, typeurls.LISTENER, typeurls.ROUTE, typeurls.ENDPOINT):
        for name in snapshot.names(type_url):
            assert KEY not in _dump(snapshot.resource(type_url, name))
    assert names.egress_listener("cloud") in snapshot.names(typeurls.LISTENER)
    assert KEY not in repr(settings)
    assert verify_snapshot(snapshot, catalog) == []


def test_a_plan_whose_key_the_node_lacks_does_not_compile() -> None:
    plan = evaluate_plan(flow_catalog(9001, 9002))
    with pytest.raises(PlanMismatch, match=KEY_NAME):
        MeshModel.build([plan], {NODE: NodeSettings(app_port=8080)})
