"""The "metrics off" baseline of ``bench/metrics_cost.py``: the shipped edge node's
compiled config with every telemetry addition taken out.

tiermesh always compiles its telemetry (it costs too little to be worth a switch); to
measure what it adds, :func:`compile_without_telemetry` compiles the node as shipped and
removes, from that snapshot only:

- the routes' ``tiermesh`` metadata (first backend, first-byte deadline) and the virtual
  host's ``x-tiermesh-overhead-us`` header (Envoy's ``%COMMON_DURATION%`` formatter);
- from the usage access log: the two route-metadata custom tags and the request and
  response headers logged for the metrics (tenant stays: accounting needs it);
- from the usage Lua filter: the request body's and answer's ``model`` matches, their
  metadata writes and the overhead header's conversion (each snippet must be found, so a
  change to the filter breaks this baseline loudly instead of leaving telemetry in).

Everything else (ext_authz, usage accounting, routes, clusters) is as compiled.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from tiermesh.controlplane.api import telemetry
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.generators.usage import LUA_FILTER, TENANT_HEADER
from tiermesh.controlplane.model import MeshModel, names
from tiermesh.xds import Snapshot, typeurls

__all__ = ["compile_without_telemetry", "lua_without_telemetry"]

_LUA_CUTS = (
    (
        """  local model = string.match(bytes, MODEL)
  if model ~= nil then
    handle:streamInfo():dynamicMetadata():set(NAMESPACE, "request_model", model)
  end
""",
        "",
    ),
    (
        """  local overhead = headers:get(OVERHEAD_US)
  if overhead ~= nil then
    headers:remove(OVERHEAD_US)
    local us = tonumber(overhead)
    if us ~= nil then headers:replace(OVERHEAD_MS, string.format("%.3f", us / 1000)) end
  end
""",
        "",
    ),
    ("    if model == nil then model = string.match(text, MODEL) or false end\n", ""),
    (
        f"""  if model then
    handle:streamInfo():dynamicMetadata():set(NAMESPACE, "{telemetry.RESPONSE_MODEL_KEY}", model)
  end
""",
        "",
    ),
)


def lua_without_telemetry(source: str) -> str:
    """The usage filter's ``source`` without its telemetry snippets (module doc)."""
    for snippet, replacement in _LUA_CUTS:
        if snippet not in source:
            raise RuntimeError(f"the usage filter changed; not found:\n{snippet}")
        source = source.replace(snippet, replacement)
    return source


def _strip_listener(manager: hcm_pb2.HttpConnectionManager) -> None:
    for http_filter in manager.http_filters:
        if http_filter.name != LUA_FILTER:
            continue
        lua = lua_pb2.Lua()
        http_filter.typed_config.Unpack(lua)
        code = lua.default_source_code.inline_string
        lua.default_source_code.inline_string = lua_without_telemetry(code)
        http_filter.typed_config.Pack(lua)
    for log in manager.access_log:
        config = als_pb2.HttpGrpcAccessLogConfig()
        log.typed_config.Unpack(config)
        tags = config.common_config.custom_tags
        kept = [
            t
            for t in tags
            if t.tag not in (telemetry.FIRST_BACKEND_TAG, telemetry.FIRST_BYTE_MS_TAG)
        ]
        del tags[:]
        tags.extend(kept)
        del config.additional_request_headers_to_log[:]
        config.additional_request_headers_to_log.append(TENANT_HEADER)
        del config.additional_response_headers_to_log[:]
        log.typed_config.Pack(config)


def _strip_routes(table: route_pb2.RouteConfiguration) -> None:
    for host in table.virtual_hosts:
        kept = [
            h for h in host.response_headers_to_add if h.header.key != telemetry.OVERHEAD_US_HEADER
        ]
        del host.response_headers_to_add[:]
        host.response_headers_to_add.extend(kept)
        for route in host.routes:
            route.ClearField("metadata")


def compile_without_telemetry(model: MeshModel, node_id: str) -> Snapshot:
    """``node_id``'s shipped snapshot without its telemetry (module doc)."""
    snapshot = compile_snapshot(model, node_id)
    resources = {
        type_url: [resource.decode() for resource in snapshot.encoded(type_url).values()]
        for type_url in typeurls.PUSH_ORDER
    }
    for listener in resources[typeurls.LISTENER]:
        if listener.name != names.APP_LISTENER:
            continue
        network = listener.filter_chains[0].filters[0]
        manager = hcm_pb2.HttpConnectionManager()
        network.typed_config.Unpack(manager)
        _strip_listener(manager)
        network.typed_config.Pack(manager)
    for table in resources[typeurls.ROUTE]:
        _strip_routes(table)
    return Snapshot.from_resources(resources)
