"""Cascade steps are chosen by ext_authz's metadata, not by a header or a secret in config:
step routes match the metadata, no route lets the secret go upstream, and the secret
reaches neither the registration the control plane stores nor any compiled resource."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from envoy.config.route.v3 import route_components_pb2 as rc

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tiermesh.controlplane.api import (
    CASCADE_STEP_METADATA,
    Catalog,
    Plan,
    RegisteredNode,
)
from tiermesh.controlplane.generators import routes
from tiermesh.controlplane.model import CascadeSettings, MeshModel, NodeSettings, names
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.runtime.status import _registration
from tiermesh.controlplane.store.memory import MemoryStore
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.controlplane.verify.route_tree import host_routes

TOKEN = "s3cret-token_0123456789abcdefABCDEF"
STEP, TOKEN_HEADER = names.CASCADE_STEP_HEADER, names.CASCADE_TOKEN_HEADER


def _settings(**extra: object) -> NodeSettings:
    return NodeSettings(
        app_port=EDGE_SETTINGS.app_port,
        trust_bundle_pem=EDGE_SETTINGS.trust_bundle_pem,
        authz=EDGE_SETTINGS.authz,
        cascade=CascadeSettings(port=7777),
        **extra,  # type: ignore[arg-type]
    )


def _table(plan: Plan) -> list[rc.Route]:
    (config,) = routes.generate(MeshModel.build([plan], {EDGE: _settings()}), EDGE)
    return host_routes(config.virtual_hosts[0])


def _step_routes(table: list[rc.Route]) -> list[rc.Route]:
    found = [r for r in table if "/cascade/" in r.name]
    assert found, "the demo catalog's cascade task compiles to step routes"
    return found


def test_step_routes_match_ext_authz_metadata_and_remove_both_headers(edge_plan: Plan) -> None:
    namespace, key = CASCADE_STEP_METADATA
    for route in _step_routes(_table(edge_plan)):
        step = route.name.rsplit("/", 1)[1]
        (matcher,) = route.match.dynamic_metadata
        assert matcher.filter == namespace
        assert [segment.key for segment in matcher.path] == [key]
        assert matcher.value.string_match.exact == step
        assert not matcher.invert
        # No header of the cascade's own decides the step: a client can send any of them.
        assert not [h for h in route.match.headers if h.name.startswith("x-tiermesh-cascade")]
        assert list(route.request_headers_to_remove) == [STEP, TOKEN_HEADER]


def test_no_route_but_the_handlers_lets_the_secret_header_go_upstream(edge_plan: Plan) -> None:
    table = _table(edge_plan)
    forwarding = [r for r in table if r.HasField("route")]
    to_handler = [r for r in forwarding if r.route.cluster == names.CASCADE_CLUSTER]
    assert to_handler
    for route in forwarding:
        removed = TOKEN_HEADER in route.request_headers_to_remove
        assert removed == (route not in to_handler), route.name


def test_the_verifier_holds_with_step_routes(edge_plan: Plan, catalog: Catalog) -> None:
    names_ = {b.credential.secret for b in catalog.backends if b.credential is not None}
    settings = _settings(credentials=dict.fromkeys(names_, "placeholder"))
    compile_and_verify(MeshModel.build([edge_plan], {EDGE: settings}), EDGE, catalog)


def _registered(**fields: object) -> RegisteredNode:
    return RegisteredNode.model_validate(
        {
            "node_id": "edge-1",
            "tier": "local",
            "region": "eu",
            "app_port": 10000,
            "spiffe_id": "spiffe://mesh.test/node/edge-1",
            "registered_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            **fields,
        }
    )


def test_status_still_redacts_a_token_an_older_control_plane_stored() -> None:
    shown = _registration(_registered(cascade_port=7777, cascade_token=TOKEN))
    assert TOKEN not in json.dumps(shown)
    assert shown["cascade_token"] == "<redacted>"


async def test_an_older_agents_token_changes_nothing_compiled() -> None:
    """A registration that still carries a token compiles exactly as one without."""
    store = MemoryStore()
    first = _registered(cascade_port=7777)
    lease = await store.register_node("edge-1", first.model_dump_json().encode(), ttl_s=60)
    directory = NodeDirectory(store, "")
    await directory.start()
    try:
        before = await asyncio.to_thread(directory.settings_for, "edge-1")
        assert before.cascade == CascadeSettings(port=7777)
        with_token = first.model_copy(update={"cascade_token": TOKEN})
        await store.update_node(lease, with_token.model_dump_json().encode())
        await asyncio.sleep(0.2)
        after = await asyncio.to_thread(directory.settings_for, "edge-1")
        assert after == before
        assert TOKEN not in repr(after)
    finally:
        await directory.aclose()
