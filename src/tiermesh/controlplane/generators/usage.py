"""Usage accounting hooks: a Lua filter that reads token usage from answers, a gRPC access
log that reports it, and the static cluster of the agent's access-log server.

Only for nodes whose :class:`~tiermesh.controlplane.model.UsageSettings` is set.

- **Lua filter** (:func:`usage_filter`), on the app listener before the router. On a 2xx
  answer whose ``content-type`` is JSON or ``text/event-stream`` it streams the body
  (``bodyChunks``: nothing is held back, the client gets each chunk as it comes) and
  searches each chunk, plus the last ``scan_bytes`` of the chunk before it, for a
  ``"usage": {…}`` object holding ``prompt_tokens`` and ``completion_tokens``. The last
  one found wins, which for a stream is the final chunk that carries usage. Both counts
  go to dynamic metadata ``tiermesh.usage`` (``prompt_tokens``, ``completion_tokens``,
  numbers). An answer without usage sets nothing. Memory is bounded by one chunk plus
  ``scan_bytes``; a ``usage`` object longer than ``scan_bytes`` may be missed.
  ``"usage"`` inside a JSON string is escaped (``\\"usage\\"``) and is skipped.
- **Access log** (:func:`usage_access_log`), on the app listener's connection manager:
  ``envoy.access_loggers.http_grpc`` to :data:`USAGE_CLUSTER`, one entry per request,
  with request header ``x-tiermesh-tenant``, custom tags :data:`BACKEND_TAG` and
  :data:`TIER_TAG` from the answering endpoint's metadata (``tiermesh: {backend, tier}``;
  through an aggregate cluster this names the member that answered) and the dynamic
  metadata above (``common_properties.metadata``). Entries are sent at most
  ``flush_interval_ms`` after the request ends; a dead server loses entries and never
  fails a request.

Verified with Envoy 1.40 (tests/integration/budgets): JSON and SSE answers through an
aggregate cluster arrive at the server with tenant, backend, tier and both counts.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from envoy.type.metadata.v3 import metadata_pb2
from envoy.type.tracing.v3 import custom_tag_pb2

from tiermesh.controlplane.generators._protos import ms, pack
from tiermesh.controlplane.model import UsageSettings

__all__ = [
    "BACKEND_TAG",
    "LOG_NAME",
    "LUA_FILTER",
    "METADATA_NAMESPACE",
    "TENANT_HEADER",
    "TIER_TAG",
    "USAGE_CLUSTER",
    "lua_source",
    "usage_access_log",
    "usage_cluster",
    "usage_filter",
]

LUA_FILTER = "envoy.filters.http.lua"
"""Name of Envoy's Lua HTTP filter."""
USAGE_CLUSTER = "tiermesh|usage"
"""Static cluster of the node's access-log server."""
METADATA_NAMESPACE = "tiermesh.usage"
"""Dynamic-metadata namespace the Lua filter writes ``prompt_tokens``/``completion_tokens`` to."""
LOG_NAME = "tiermesh_usage"
"""``log_name`` of the access log (the server sees it in each stream's identifier)."""
TENANT_HEADER = "x-tiermesh-tenant"
BACKEND_TAG = "tiermesh.backend"
"""Custom tag: the answering endpoint's backend name."""
TIER_TAG = "tiermesh.tier"
"""Custom tag: the answering endpoint's tier."""
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_LUA = """
local SCAN = __SCAN__

local function find_usage(text)
  local prompt, completion = nil, nil
  local init = 1
  for _ = 1, 4096 do
    local first, last = string.find(text, '"usage"%s*:%s*{', init)
    if first == nil then break end
    if first == 1 or string.sub(text, first - 1, first - 1) ~= "\\\\" then
      local window = string.sub(text, last, last + SCAN)
      local p = string.match(window, '"prompt_tokens"%s*:%s*(%d+)%s*[,}]')
      local c = string.match(window, '"completion_tokens"%s*:%s*(%d+)%s*[,}]')
      if p ~= nil and c ~= nil then
        prompt, completion = tonumber(p), tonumber(c)
      end
    end
    init = last + 1
  end
  return prompt, completion
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local status = headers:get(":status") or ""
  if string.sub(status, 1, 1) ~= "2" then return end
  local kind = headers:get("content-type") or ""
  if not (string.find(kind, "json", 1, true) or string.find(kind, "event-stream", 1, true)) then
    return
  end
  local carry = ""
  local prompt, completion = nil, nil
  for chunk in handle:bodyChunks() do
    local text = carry .. chunk:getBytes(0, chunk:length())
    local p, c = find_usage(text)
    if p ~= nil then prompt, completion = p, c end
    if #text > SCAN then carry = string.sub(text, -SCAN) else carry = text end
  end
  if prompt ~= nil then
    local metadata = handle:streamInfo():dynamicMetadata()
    metadata:set("__NAMESPACE__", "prompt_tokens", prompt)
    metadata:set("__NAMESPACE__", "completion_tokens", completion)
  end
end
"""


def lua_source(settings: UsageSettings) -> str:
    """The Lua filter's source for ``settings`` (see the module doc)."""
    return _LUA.replace("__SCAN__", str(settings.scan_bytes)).replace(
        "__NAMESPACE__", METADATA_NAMESPACE
    )


def usage_filter(settings: UsageSettings) -> hcm_pb2.HttpFilter:
    """The Lua filter that copies an answer's ``usage`` into ``tiermesh.usage`` metadata."""
    config = lua_pb2.Lua(
        default_source_code=base_pb2.DataSource(inline_string=lua_source(settings))
    )
    return hcm_pb2.HttpFilter(name=LUA_FILTER, typed_config=pack(config))


def _host_tag(tag: str, key: str) -> custom_tag_pb2.CustomTag:
    return custom_tag_pb2.CustomTag(
        tag=tag,
        metadata=custom_tag_pb2.CustomTag.Metadata(
            kind=metadata_pb2.MetadataKind(host=metadata_pb2.MetadataKind.Host()),
            metadata_key=metadata_pb2.MetadataKey(
                key="tiermesh", path=[metadata_pb2.MetadataKey.PathSegment(key=key)]
            ),
        ),
    )


def usage_access_log(settings: UsageSettings) -> accesslog_pb2.AccessLog:
    """The HTTP gRPC access log to :data:`USAGE_CLUSTER` (see the module doc)."""
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=LOG_NAME,
            grpc_service=grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=USAGE_CLUSTER)
            ),
            transport_api_version=config_source_pb2.V3,
            buffer_flush_interval=ms(settings.flush_interval_ms),
            custom_tags=[_host_tag(BACKEND_TAG, "backend"), _host_tag(TIER_TAG, "tier")],
        ),
        additional_request_headers_to_log=[TENANT_HEADER],
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.http_grpc", typed_config=pack(config))


def usage_cluster(settings: UsageSettings, connect_timeout_ms: int) -> cluster_pb2.Cluster:
    """A static HTTP/2 cluster with the access-log server's one address."""
    options = upstream_http_pb2.HttpProtocolOptions(
        explicit_http_config=upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    address = address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=settings.host, port_value=settings.port)
    )
    return cluster_pb2.Cluster(
        name=USAGE_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=ms(connect_timeout_ms),
        typed_extension_protocol_options={_HTTP_OPTIONS: pack(options)},
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=USAGE_CLUSTER,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(address=address)
                        )
                    ]
                )
            ],
        ),
    )
