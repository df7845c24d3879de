"""The cloud tier's API key reaches it only through Envoy's egress listener (SDS secret)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from tests.integration.compiler.conftest import eventually
from tests.integration.flows.conftest import NODE, FlowMesh, envoy_with
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import MeshModel
from tiermesh.xds import typeurls

pytestmark = [pytest.mark.envoy, pytest.mark.model]


def test_envoy_injects_the_key_and_the_cloud_answers(flow_mesh: FlowMesh) -> None:
    assert flow_mesh.chain("acme.public.reasoning.*") == ["cloud", "edge"]
    answer = flow_mesh.chat("reasoning")
    assert (answer.status, answer.tier, answer.backend) == (200, "cloud", "cloud")
    assert answer.json()["usage"]["total_tokens"] > 0


def test_the_key_is_only_in_the_sds_secret(flow_mesh: FlowMesh) -> None:
    key = flow_mesh.cloud.api_key
    assert key not in flow_mesh.plan.model_dump_json()
    assert key not in repr(flow_mesh.settings)
    model = MeshModel.build([flow_mesh.plan], {NODE: flow_mesh.settings})
    snapshot = compile_snapshot(model, NODE)
    for type_url in (typeurls.CLUSTER, typeurls.LISTENER, typeurls.ROUTE, typeurls.ENDPOINT):
        for name in snapshot.names(type_url):
            resource = snapshot.resource(type_url, name)
            assert key not in json.dumps(json_format.MessageToDict(resource))
    assert key not in flow_mesh.envoy.admin_text("/config_dump?include_eds")


def test_without_the_egress_listener_the_cloud_refuses_with_401(
    flow_mesh: FlowMesh, tmp_path: Path
) -> None:
    """The same plan compiled without the credential: Envoy sends no key, the cloud
    answers 401 (its health check first, so it never turns healthy) and the local tier
    serves the route instead."""
    bare = flow_mesh.plan.model_copy(
        update={
            "backends": tuple(
                b.model_copy(update={"credential": None}) for b in flow_mesh.plan.backends
            )
        }
    )
    model = MeshModel.build([bare], {NODE: flow_mesh.settings})
    assert compile_snapshot(model, NODE).names(typeurls.SECRET) == frozenset()
    flow_mesh.envoy.stop()  # the listener port goes to a fresh Envoy with the bare config
    with envoy_with(compile_snapshot(model, NODE), tmp_path / "bare"):
        eventually(lambda: flow_mesh.cloud.unauthorized > 0, what="401 without key")
        answers = [flow_mesh.chat("reasoning") for _ in range(3)]
    assert [(a.status, a.tier) for a in answers] == [(200, "local")] * 3
    assert flow_mesh.cloud.unauthorized >= 1
