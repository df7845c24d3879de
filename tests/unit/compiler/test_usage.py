"""The usage filter's compiled config: one Lua filter before the router that asks streams
for usage (bounded request bodies) and reads and strips the usage chunk; the behaviour
itself runs in a real Envoy (tests/integration/budgets/test_stream_usage.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from tests.unit.compiler.conftest import EDGE_SETTINGS
from tiermesh.controlplane.api import Plan, telemetry
from tiermesh.controlplane.generators import GENERATORS
from tiermesh.controlplane.generators.usage import (
    ADDED_KEY,
    FIRST_TAG,
    HOLD_BYTES,
    LUA_FILTER,
    MAX_BODY_BYTES,
    METADATA_NAMESPACE,
    lua_source,
    usage_filter,
)
from tiermesh.controlplane.model import AuthzSettings, MeshModel, UsageSettings, names
from tiermesh.xds import typeurls

SETTINGS = UsageSettings(port=9101, scan_bytes=300)


def constants(source: str) -> dict[str, str]:
    return dict(re.findall(r"^local ([A-Z_]+) = (.+)$", source, flags=re.MULTILINE))


def test_the_source_carries_its_bounds_and_names() -> None:
    source = lua_source(SETTINGS)
    assert "__" not in re.sub(r"__[a-z]+", "", source), "a placeholder is left"
    assert constants(source) == {
        "SCAN": "300",
        "HOLD": str(HOLD_BYTES),
        "MAX_BODY": str(MAX_BODY_BYTES),
        "NAMESPACE": f'"{METADATA_NAMESPACE}"',
        "ADDED": f'"{ADDED_KEY}"',
        "OVERHEAD_US": f'"{telemetry.OVERHEAD_US_HEADER}"',
        "OVERHEAD_MS": f'"{telemetry.OVERHEAD_HEADER}"',
        "MODEL": """'"model"%s*:%s*"([%w%._:/@+%-]+)"'""",
    }
    assert constants(lua_source(SETTINGS, max_body_bytes=1024))["MAX_BODY"] == "1024"
    assert AuthzSettings(port=1).max_body_bytes == MAX_BODY_BYTES


def test_the_source_handles_both_directions_and_streams_the_answer() -> None:
    source = lua_source(SETTINGS)
    assert "function envoy_on_request(handle)" in source
    assert "function envoy_on_response(handle)" in source
    assert "handle:bodyChunks()" in source
    assert source.count("handle:body()") == 1, "only the request body is buffered"
    assert '"stream_options":{"include_usage":true}' in source
    # Lua string escapes survive the Python source: one backslash, CR and LF.
    assert '"\\\\"' in source
    assert '"\\r?\\n\\r?\\n"' in source


def test_a_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        usage_filter(SETTINGS, max_body_bytes=-1)


def test_the_filter_is_inline_lua() -> None:
    compiled = usage_filter(SETTINGS, max_body_bytes=2048)
    assert compiled.name == LUA_FILTER
    config = lua_pb2.Lua()
    assert compiled.typed_config.Unpack(config)
    assert config.default_source_code.inline_string == lua_source(SETTINGS, 2048)


def app_filters(model: MeshModel) -> list[str]:
    (listener,) = GENERATORS[typeurls.LISTENER](model, "edge-1")
    manager = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return [f.name for f in manager.http_filters]


def test_one_lua_filter_right_before_the_router_only_with_usage(edge_plan: Plan) -> None:
    settings = dataclasses.replace(EDGE_SETTINGS, authz=AuthzSettings(port=9100), usage=SETTINGS)
    names = app_filters(MeshModel.build([edge_plan], {"edge-1": settings}))
    assert names.count(LUA_FILTER) == 1
    assert names[-2:] == [LUA_FILTER, "envoy.filters.http.router"]
    assert names[0] == "envoy.filters.http.ext_authz", "the policy sees the client's body"
    assert LUA_FILTER not in app_filters(MeshModel.build([edge_plan], {"edge-1": EDGE_SETTINGS}))


def test_the_telemetry_contract_names_what_the_compiler_writes() -> None:
    # Agents read these from tiermesh.controlplane.api.telemetry (they may not import the
    # control plane's model); the compiler writes them from its names.
    assert telemetry.ROUTE_METADATA_NAMESPACE == names.ROUTE_METADATA
    assert telemetry.FIRST_BACKEND_KEY == names.FIRST_BACKEND_KEY
    assert telemetry.FIRST_BACKEND_TAG == FIRST_TAG
