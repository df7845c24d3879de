"""The API surface: the catalog's paths and methods, and the only ones compiled routes and
credentialed egress forward."""

from __future__ import annotations

import re

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from pydantic import ValidationError

from tests.integration.flows.conftest import KEY_NAME, NODE, flow_catalog
from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tests.unit.compiler.plans import TEST_AUTHZ, evaluate_plan
from tiermesh.controlplane.api import OPENAI_API, ApiEndpoint, Catalog, Plan
from tiermesh.controlplane.generators import api_surface, compile_snapshot, routes
from tiermesh.controlplane.model import MeshModel, NodeSettings, names
from tiermesh.controlplane.verify.route_tree import host_routes
from tiermesh.xds import typeurls


def _regex_of(matcher: object) -> str:
    return str(matcher.string_match.safe_regex.regex)  # type: ignore[attr-defined]


def test_the_route_table_starts_with_the_guard_and_every_forwarding_route_follows_it(
    edge_plan: Plan,
) -> None:
    model = MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS})
    (config,) = routes.generate(model, EDGE)
    table = host_routes(config.virtual_hosts[0])
    guard = len(OPENAI_API) + 1
    assert [r.name for r in table[:guard]] == [
        api_surface.PATH_ROUTE,
        *(api_surface.method_route(e.path) for e in OPENAI_API),
    ]
    assert all(r.HasField("direct_response") for r in table[:guard])
    assert not any(r.HasField("route") for r in table[:guard])


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("/v1/chat/completions", True),
        ("/v1/chat/completions?stream=true", True),
        ("/v1/models", True),
        ("/v1/files", False),
        ("/v1/chat/completions/", False),
        ("/v1/chatXcompletions", False),
        ("/v1/chat/completions/../files", False),
    ],
)
def test_the_path_pattern_is_an_exact_allow_list(path: str, served: bool) -> None:
    pattern = _regex_of(api_surface.path_matcher(OPENAI_API))
    assert (re.fullmatch(pattern, path) is not None) is served


def test_a_catalog_surface_replaces_the_default(edge_plan: Plan) -> None:
    api = (ApiEndpoint(path="/v2/generate"),)
    model = MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}, api=api)
    (config,) = routes.generate(model, EDGE)
    first = host_routes(config.virtual_hosts[0])[0]
    assert re.fullmatch(_regex_of(first.match.headers[0]), "/v2/generate")
    assert first.match.headers[0].invert_match


def test_a_provider_key_is_injected_only_on_the_surface() -> None:
    plan = evaluate_plan(flow_catalog(9001, 9002))
    settings = NodeSettings(app_port=8080, authz=TEST_AUTHZ, credentials={KEY_NAME: "sk-x"})
    snapshot = compile_snapshot(MeshModel.build([plan], {NODE: settings}), NODE)
    listener = snapshot.resource(typeurls.LISTENER, names.egress_listener("cloud"))
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    (route,) = manager.route_config.virtual_hosts[0].routes
    (matcher,) = route.match.headers
    assert (matcher.name, matcher.invert_match) == (":path", False)
    assert re.fullmatch(_regex_of(matcher), "/v1/chat/completions")
    assert re.fullmatch(_regex_of(matcher), "/v1/files") is None


def test_the_catalog_refuses_a_path_listed_twice_and_a_malformed_path(catalog: Catalog) -> None:
    with pytest.raises(ValidationError, match="more than once"):
        catalog.model_copy(update={}).model_validate(
            {**catalog.model_dump(mode="json"), "api": [{"path": "/v1/x"}, {"path": "/v1/x"}]}
        )
    with pytest.raises(ValidationError, match="path"):
        ApiEndpoint(path="/v1/x?y=1")
    with pytest.raises(ValidationError, match="methods"):
        ApiEndpoint(path="/v1/x", methods=())
