"""The cascade handler's secret: step routes match it, no route lets it go upstream, and
neither the settings' repr nor the status document shows it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tiermesh.controlplane.api import Catalog, Plan, RegisteredNode
from tiermesh.controlplane.generators import routes
from tiermesh.controlplane.model import CascadeSettings, MeshModel, NodeSettings, names
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.runtime.status import _registration
from tiermesh.controlplane.store.memory import MemoryStore
from tiermesh.controlplane.verify import compile_and_verify

TOKEN = "s3cret-token_0123456789abcdefABCDEF"
STEP, TOKEN_HEADER = names.CASCADE_STEP_HEADER, names.CASCADE_TOKEN_HEADER


def _table(plan: Plan, token: str | None) -> list[rc.Route]:
    settings = NodeSettings(
        app_port=EDGE_SETTINGS.app_port,
        trust_bundle_pem=EDGE_SETTINGS.trust_bundle_pem,
        authz=EDGE_SETTINGS.authz,
        cascade=CascadeSettings(port=7777, token=token),
    )
    (config,) = routes.generate(MeshModel.build([plan], {EDGE: settings}), EDGE)
    return list(config.virtual_hosts[0].routes)


def _step_routes(table: list[rc.Route]) -> list[rc.Route]:
    found = [r for r in table if "/cascade/" in r.name]
    assert found, "the demo catalog's cascade task compiles to step routes"
    return found


def _matchers(route: rc.Route) -> dict[str, str]:
    return {h.name: h.string_match.exact for h in route.match.headers}


def test_step_routes_match_the_token_and_remove_both_headers(edge_plan: Plan) -> None:
    for route in _step_routes(_table(edge_plan, TOKEN)):
        step = route.name.rsplit("/", 1)[1]
        matchers = _matchers(route)
        assert matchers[STEP] == step
        assert matchers[TOKEN_HEADER] == TOKEN
        assert list(route.request_headers_to_remove) == [STEP, TOKEN_HEADER]


def test_no_route_but_the_handlers_lets_the_token_go_upstream(edge_plan: Plan) -> None:
    table = _table(edge_plan, TOKEN)
    forwarding = [r for r in table if r.HasField("route")]
    to_handler = [r for r in forwarding if r.route.cluster == names.CASCADE_CLUSTER]
    assert to_handler
    for route in forwarding:
        removed = TOKEN_HEADER in route.request_headers_to_remove
        assert removed == (route not in to_handler), route.name
    # The secret appears only in the step routes' matchers.
    others = [r for r in table if "/cascade/" not in r.name]
    assert all(TOKEN not in str(r) for r in others)


def test_without_a_token_step_routes_match_the_step_header_alone(edge_plan: Plan) -> None:
    table = _table(edge_plan, None)
    for route in _step_routes(table):
        assert [h.name for h in route.match.headers if h.name.startswith("x-tiermesh-cascade")] == [
            STEP
        ]
    assert all(not r.request_headers_to_remove for r in table)


def test_the_verifier_holds_with_a_token(edge_plan: Plan, catalog: Catalog) -> None:
    settings = NodeSettings(
        app_port=EDGE_SETTINGS.app_port,
        trust_bundle_pem=EDGE_SETTINGS.trust_bundle_pem,
        authz=EDGE_SETTINGS.authz,
        credentials=dict.fromkeys(_credential_names(catalog), "placeholder"),
        cascade=CascadeSettings(port=7777, token=TOKEN),
    )
    compile_and_verify(MeshModel.build([edge_plan], {EDGE: settings}), EDGE, catalog)


def _credential_names(catalog: Catalog) -> set[str]:
    return {b.credential.secret for b in catalog.backends if b.credential is not None}


def test_the_token_is_not_in_reprs() -> None:
    settings = NodeSettings(app_port=1, cascade=CascadeSettings(port=7777, token=TOKEN))
    assert TOKEN not in repr(settings)
    assert TOKEN not in repr(_registered(cascade_port=7777, cascade_token=TOKEN))


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


def test_status_redacts_the_token() -> None:
    shown = _registration(_registered(cascade_port=7777, cascade_token=TOKEN))
    assert TOKEN not in json.dumps(shown)
    assert shown["cascade_token"] == "<redacted>"
    assert _registration(_registered(cascade_port=7777))["cascade_token"] is None


@pytest.mark.parametrize("token", ["short", "has space in it but long enough", "x" * 129])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="cascade_token"):
        _registered(cascade_port=7777, cascade_token=token)


async def test_the_registered_token_reaches_the_settings_and_a_new_one_recompiles() -> None:
    store = MemoryStore()
    first = _registered(cascade_port=7777, cascade_token=TOKEN)
    lease = await store.register_node("edge-1", first.model_dump_json().encode(), ttl_s=60)
    changed = asyncio.Event()
    directory = NodeDirectory(store, "", on_settings_changed=changed.set)
    await directory.start()
    try:
        settings = await asyncio.to_thread(directory.settings_for, "edge-1")
        assert settings.cascade == CascadeSettings(port=7777, token=TOKEN)
        second = first.model_copy(update={"cascade_token": TOKEN[::-1]})
        await store.update_node(lease, second.model_dump_json().encode())
        await asyncio.wait_for(changed.wait(), 5)
        settings = await asyncio.to_thread(directory.settings_for, "edge-1")
        assert settings.cascade is not None
        assert settings.cascade.token == TOKEN[::-1]
    finally:
        await directory.aclose()
