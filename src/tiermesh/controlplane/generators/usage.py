"""Usage accounting hooks: a Lua filter that reads token usage from answers (and asks
streams for it), a gRPC access log that reports it, and the static cluster of the agent's
access-log server.

Only for nodes whose :class:`~tiermesh.controlplane.model.UsageSettings` is set.

- **Lua filter** (:func:`usage_filter`), on the app listener after ext_authz, before the
  router.

  *Requests.* An OpenAI-compatible API streams a usage chunk only when the request asks
  (``"stream_options": {"include_usage": true}``), so a client could stream uncharged.
  For a ``POST`` to a path ending in ``/completions`` whose ``content-length`` is at most
  ``max_body_bytes`` (the node's ext_authz ``max_body_bytes``: the same bodies ext_authz
  reads; :data:`MAX_BODY_BYTES`, ext_authz's default, on a node without one), the filter
  buffers the body and, when it is one JSON object with top-level ``"stream": true`` and
  ``include_usage`` is not already ``true``, rewrites it to ask: ``stream_options`` is
  added, filled in (``null``, ``{}``) or merged (its other members kept; an explicit
  ``include_usage: false`` is forced on too, since accounting must not depend on the
  client and the chunk is removed again below). It then sets :data:`ADDED_KEY` in
  ``tiermesh.usage`` metadata. Envoy updates ``content-length`` with the new body. The
  JSON scan is lexical (strings, nesting, whitespace, ``\\u`` escapes in key names, last
  duplicate wins); a body that does not scan, is bigger, has no ``content-length``
  (chunked upload, HTTP/2 without it) or is not on such a path passes untouched: unless the
  client asked, such a stream carries no usage, and the agent's usage server charges it an
  estimate from the request's and the answer's body bytes, which the access log reports
  (:mod:`tiermesh.agents.usage.server`). ext_authz sees the body as the client sent it.

  *Answers.* On a 2xx answer whose ``content-type`` is JSON or ``text/event-stream`` it
  streams the body (``bodyChunks``: the client gets each chunk as it comes) and searches
  each chunk, plus the last ``scan_bytes`` of the chunk before it, for a ``"usage": {…}``
  object holding ``prompt_tokens`` and ``completion_tokens``. The last one found wins,
  which for a stream is the final chunk that carries usage. Both counts go to dynamic
  metadata ``tiermesh.usage`` (``prompt_tokens``, ``completion_tokens``, numbers). An
  answer without usage sets nothing. ``"usage"`` inside a JSON string is escaped
  (``\\"usage\\"``) and is skipped; a ``usage`` object longer than ``scan_bytes`` may
  be missed.

  *Removing the chunk.* When the filter asked and the answer is an SSE stream without
  ``content-length`` (chunked or HTTP/2, so bytes can be dropped), it removes every event
  whose data is one JSON object with ``"choices": []`` and a ``usage`` object; all other
  bytes pass unchanged (content events keep the ``"usage": null`` the server adds when
  asked). To see an event whole, the incomplete last event of a chunk is held until its
  end arrives, unless it is longer than :data:`HOLD_BYTES`, holds ``[DONE]`` or has
  non-empty ``choices`` (content events pass at once). Held bytes of a stream that ends
  without the event's end are dropped, as an SSE client discards an unterminated event.
  Events end with a blank line (``\\n\\n``, ``\\r\\n\\r\\n``); a usage event that also carries
  choices is left in. Memory is bounded by one chunk plus ``scan_bytes`` plus
  :data:`HOLD_BYTES`.
  *Telemetry.* On every answer (any status) the filter replaces the route table's
  ``x-tiermesh-overhead-us`` by ``x-tiermesh-overhead-ms`` (the same figure in
  milliseconds, three decimals): Envoy's time from the request's first byte to the first
  byte it sent to the answering upstream — ext_authz (with its durable record), these
  filters, the upstream connection and any earlier attempts of a fallback chain; not the
  model's time, and not the few microseconds Envoy takes to relay the answer. It also
  keeps the first ``"model": "…"`` of the request body it read (``request_model``) and of
  the answer's first chunk (``response_model``) in ``tiermesh.usage`` metadata, for the
  node's GenAI metrics; one pattern match each, no JSON decoding.
- **Access log** (:func:`usage_access_log`), on the app listener's connection manager:
  ``envoy.access_loggers.http_grpc`` to :data:`USAGE_CLUSTER`, one entry per request,
  with request header ``x-tiermesh-tenant``, custom tag :data:`FIRST_TAG` from the
  route's metadata, custom tags :data:`BACKEND_TAG` and
  :data:`TIER_TAG` from the answering endpoint's metadata (``tiermesh: {backend, tier}``;
  through an aggregate cluster this names the member that answered) and the dynamic
  metadata above (``common_properties.metadata``); Envoy adds the method, path, status,
  upstream address and both body sizes, which the server needs to estimate an answer
  without usage, and the route name, upstream cluster, try count, the request's
  ``x-tiermesh-budget`` (as ext_authz set it) and the answer's
  ``x-tiermesh-tier`` and ``x-tiermesh-cascade-steps`` headers, from which it counts
  answers by tier and chain position (:mod:`tiermesh.agents.usage.answers`); for the
  node's metrics also the route's first-byte deadline (route metadata, see :mod:`.routes`),
  the request's ``x-tiermesh-sensitivity`` and ``x-tiermesh-model`` and the answer's
  ``content-type`` (:mod:`tiermesh.controlplane.api.telemetry`). Entries are sent at most
  ``flush_interval_ms`` after the request ends; a dead server loses entries and never
  fails a request.

Verified with Envoy 1.40 (tests/integration/budgets): JSON and SSE answers through an
aggregate cluster arrive at the server with tenant, backend, tier and both counts; a
stream that did not ask is rewritten (``content-length`` right), charged, and reaches the
client without the usage event, also when the event is split over two reads.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    protocol_pb2,
)
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from envoy.type.metadata.v3 import metadata_pb2
from envoy.type.tracing.v3 import custom_tag_pb2

from tiermesh.controlplane.api import telemetry
from tiermesh.controlplane.generators._protos import ms, pack, static_assignment
from tiermesh.controlplane.model import UsageSettings, names

__all__ = [
    "ADDED_KEY",
    "BACKEND_TAG",
    "FIRST_TAG",
    "HOLD_BYTES",
    "LOG_NAME",
    "LUA_FILTER",
    "MAX_BODY_BYTES",
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
FIRST_TAG = "tiermesh.first"
"""Custom tag: the backend of the route's first chain step (route metadata; absent on
routes of one step)."""
ADDED_KEY = "include_usage_added"
"""Key in :data:`METADATA_NAMESPACE`, ``true`` when the filter asked a stream for usage."""
MAX_BODY_BYTES = 64 * 1024
"""Default bound of a request body read for ``"stream": true`` (as ext_authz's default)."""
HOLD_BYTES = 4096
"""Longest incomplete SSE event held back, while stripping, until its end arrives."""
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_LUA = r"""
local SCAN = __SCAN__
local HOLD = __HOLD__
local MAX_BODY = __MAX_BODY__
local NAMESPACE = "__NAMESPACE__"
local ADDED = "__ADDED__"
local OVERHEAD_US = "__OVERHEAD_US__"
local OVERHEAD_MS = "__OVERHEAD_MS__"
local MODEL = '"model"%s*:%s*"([%w%._:/@+%-]+)"'

local function find_usage(text)
  local prompt, completion = nil, nil
  local init = 1
  for _ = 1, 4096 do
    local first, last = string.find(text, '"usage"%s*:%s*{', init)
    if first == nil then break end
    if first == 1 or string.sub(text, first - 1, first - 1) ~= "\\" then
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

-- A light JSON scan: positions of an object's members, nothing decoded but key names.

local function string_end(text, open)
  local at = open + 1
  while true do
    local k = string.find(text, '["\\]', at)
    if k == nil then return nil end
    if string.sub(text, k, k) == '"' then return k end
    at = k + 2
  end
end

local function value_end(text, first)
  local c = string.sub(text, first, first)
  if c == '"' then return string_end(text, first) end
  if c == "{" or c == "[" then
    local depth, at = 0, first
    while true do
      local k = string.find(text, '["{}%[%]]', at)
      if k == nil then return nil end
      local ch = string.sub(text, k, k)
      if ch == '"' then
        k = string_end(text, k)
        if k == nil then return nil end
      elseif ch == "{" or ch == "[" then
        depth = depth + 1
      else
        depth = depth - 1
        if depth == 0 then return k end
      end
      at = k + 1
    end
  end
  local _, last = string.find(text, "^[%w%.%+%-]+", first)
  return last
end

local function key_name(raw)
  if string.find(raw, "\\", 1, true) == nil then return raw end
  raw = string.gsub(raw, "\\u00(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  return (string.gsub(raw, "\\(.)", "%1"))
end

-- members(text, open): for the object whose "{" is at open, a table name -> {first, last}
-- (its value's bytes; the last of duplicate names wins, as in most parsers) and the
-- position of its "}"; nil when the text is not such an object.
local function members(text, open)
  local found = {}
  local _, at = string.find(text, "^%s*", open + 1)
  if string.sub(text, at + 1, at + 1) == "}" then return found, at + 1 end
  while true do
    local key = at + 1
    if string.sub(text, key, key) ~= '"' then return nil end
    local close = string_end(text, key)
    if close == nil then return nil end
    local _, colon = string.find(text, "^%s*:%s*", close + 1)
    if colon == nil then return nil end
    local last = value_end(text, colon + 1)
    if last == nil then return nil end
    found[key_name(string.sub(text, key + 1, close - 1))] = {colon + 1, last}
    local _, sep = string.find(text, "^%s*[,}]", last + 1)
    if sep == nil then return nil end
    if string.sub(text, sep, sep) == "}" then return found, sep end
    _, at = string.find(text, "^%s*", sep + 1)
  end
end

local function json_object(text)
  local _, open = string.find(text, "^%s*{")
  if open == nil then return nil end
  local found, close = members(text, open)
  if found == nil or string.find(text, "^%s*$", close + 1) == nil then return nil end
  return found, open
end

local function splice(text, first, last, with)
  return string.sub(text, 1, first - 1) .. with .. string.sub(text, last + 1)
end

-- The request body asking for a usage chunk, or nil when it is to stay as it is.
local function ask_usage(body)
  local found, open = json_object(body)
  if found == nil or found.stream == nil then return nil end
  if string.sub(body, found.stream[1], found.stream[2]) ~= "true" then return nil end
  local options = found.stream_options
  if options == nil then
    return splice(body, open + 1, open, '"stream_options":{"include_usage":true},')
  end
  local first, last = options[1], options[2]
  if string.sub(body, first, first) ~= "{" then
    return splice(body, first, last, '{"include_usage":true}')
  end
  local inner = members(body, first)
  if inner == nil then return nil end
  local include = inner.include_usage
  if include ~= nil then
    if string.sub(body, include[1], include[2]) == "true" then return nil end
    return splice(body, include[1], include[2], "true")
  end
  if next(inner) == nil then return splice(body, first, last, '{"include_usage":true}') end
  return splice(body, first + 1, first, '"include_usage":true,')
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:get(":method") ~= "POST" then return end
  local path = string.match(headers:get(":path") or "", "^[^?]*")
  if string.sub(path, -12) ~= "/completions" then return end
  local size = tonumber(headers:get("content-length") or "")
  if size == nil or size < 2 or size > MAX_BODY then return end
  local body = handle:body()
  if body == nil then return end
  local bytes = body:getBytes(0, body:length())
  local model = string.match(bytes, MODEL)
  if model ~= nil then
    handle:streamInfo():dynamicMetadata():set(NAMESPACE, "request_model", model)
  end
  local asked = ask_usage(bytes)
  if asked == nil then return end
  body:setBytes(asked)
  handle:streamInfo():dynamicMetadata():set(NAMESPACE, ADDED, true)
end

-- Whether one SSE event is the usage chunk: data holding "choices": [] and a usage object.
local function usage_event(event)
  if string.find(event, '"usage"%s*:%s*{') == nil then return false end
  local payload = string.match(event, "^%s*data:%s*(.-)%s*$")
  if payload == nil then return false end
  local found = json_object(payload)
  if found == nil or found.usage == nil or found.choices == nil then return false end
  local choices = string.sub(payload, found.choices[1], found.choices[2])
  return string.sub(payload, found.usage[1], found.usage[1]) == "{"
    and string.find(choices, "^%[%s*%]$") ~= nil
end

-- Splits held bytes plus a chunk into what goes out now (usage events removed) and an
-- incomplete last event to hold, unless it is long or cannot be the usage event.
local function strip_usage(text)
  local out = {}
  local at = 1
  while true do
    local first, last = string.find(text, "\r?\n\r?\n", at)
    if first == nil then break end
    if usage_event(string.sub(text, at, first - 1)) then
      out[#out + 1] = string.match(string.sub(text, at, first - 1), "^[\r\n]*")
    else
      out[#out + 1] = string.sub(text, at, last)
    end
    at = last + 1
  end
  local rest = string.sub(text, at)
  if #rest > HOLD or string.find(rest, "[DONE]", 1, true)
      or string.find(rest, '"choices"%s*:%s*%[%s*[^%s%]]') then
    out[#out + 1] = rest
    rest = ""
  end
  return table.concat(out), rest
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local overhead = headers:get(OVERHEAD_US)
  if overhead ~= nil then
    headers:remove(OVERHEAD_US)
    local us = tonumber(overhead)
    if us ~= nil then headers:replace(OVERHEAD_MS, string.format("%.3f", us / 1000)) end
  end
  local status = headers:get(":status") or ""
  if string.sub(status, 1, 1) ~= "2" then return end
  local kind = headers:get("content-type") or ""
  local stream = string.find(kind, "event-stream", 1, true) ~= nil
  if not (stream or string.find(kind, "json", 1, true)) then return end
  local strip = false
  if stream and headers:get("content-length") == nil then
    local ours = handle:streamInfo():dynamicMetadata():get(NAMESPACE)
    strip = ours ~= nil and ours[ADDED] == true
  end
  local carry, held = "", ""
  local prompt, completion, model = nil, nil, nil
  for chunk in handle:bodyChunks() do
    local bytes = chunk:getBytes(0, chunk:length())
    local text = carry .. bytes
    if model == nil then model = string.match(text, MODEL) or false end
    local p, c = find_usage(text)
    if p ~= nil then prompt, completion = p, c end
    if #text > SCAN then carry = string.sub(text, -SCAN) else carry = text end
    if strip then
      local out
      out, held = strip_usage(held .. bytes)
      if out ~= bytes then chunk:setBytes(out) end
    end
  end
  if prompt ~= nil then
    local metadata = handle:streamInfo():dynamicMetadata()
    metadata:set(NAMESPACE, "prompt_tokens", prompt)
    metadata:set(NAMESPACE, "completion_tokens", completion)
  end
  if model then
    handle:streamInfo():dynamicMetadata():set(NAMESPACE, "__RESPONSE_MODEL__", model)
  end
end
"""


def lua_source(settings: UsageSettings, max_body_bytes: int = MAX_BODY_BYTES) -> str:
    """The Lua filter's source for ``settings`` (see the module doc); request bodies up to
    ``max_body_bytes`` are read for ``"stream": true``."""
    if max_body_bytes < 0:
        raise ValueError("usage max_body_bytes must be >= 0")
    values = {
        "__SCAN__": str(settings.scan_bytes),
        "__HOLD__": str(HOLD_BYTES),
        "__MAX_BODY__": str(max_body_bytes),
        "__NAMESPACE__": METADATA_NAMESPACE,
        "__ADDED__": ADDED_KEY,
        "__OVERHEAD_US__": telemetry.OVERHEAD_US_HEADER,
        "__OVERHEAD_MS__": telemetry.OVERHEAD_HEADER,
        "__RESPONSE_MODEL__": telemetry.RESPONSE_MODEL_KEY,
    }
    source = _LUA
    for placeholder, value in values.items():
        source = source.replace(placeholder, value)
    return source


def usage_filter(
    settings: UsageSettings, max_body_bytes: int = MAX_BODY_BYTES
) -> hcm_pb2.HttpFilter:
    """The Lua filter that asks streams for usage and copies an answer's ``usage`` into
    ``tiermesh.usage`` metadata (see the module doc)."""
    config = lua_pb2.Lua(
        default_source_code=base_pb2.DataSource(inline_string=lua_source(settings, max_body_bytes))
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


def _route_tag(tag: str, key: str) -> custom_tag_pb2.CustomTag:
    return custom_tag_pb2.CustomTag(
        tag=tag,
        metadata=custom_tag_pb2.CustomTag.Metadata(
            kind=metadata_pb2.MetadataKind(route=metadata_pb2.MetadataKind.Route()),
            metadata_key=metadata_pb2.MetadataKey(
                key=names.ROUTE_METADATA, path=[metadata_pb2.MetadataKey.PathSegment(key=key)]
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
            custom_tags=[
                _host_tag(BACKEND_TAG, "backend"),
                _host_tag(TIER_TAG, "tier"),
                _route_tag(FIRST_TAG, names.FIRST_BACKEND_KEY),
                _route_tag(telemetry.FIRST_BYTE_MS_TAG, telemetry.FIRST_BYTE_MS_KEY),
            ],
        ),
        additional_request_headers_to_log=[
            TENANT_HEADER,
            names.BUDGET_HEADER,
            *telemetry.LOGGED_REQUEST_HEADERS,
        ],
        additional_response_headers_to_log=[
            names.TIER_HEADER,
            names.CASCADE_STEPS_HEADER,
            *telemetry.LOGGED_RESPONSE_HEADERS,
        ],
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.http_grpc", typed_config=pack(config))


def usage_cluster(settings: UsageSettings, connect_timeout_ms: int) -> cluster_pb2.Cluster:
    """A static HTTP/2 cluster with the access-log server's one address."""
    options = upstream_http_pb2.HttpProtocolOptions(
        explicit_http_config=upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    return cluster_pb2.Cluster(
        name=USAGE_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=ms(connect_timeout_ms),
        typed_extension_protocol_options={_HTTP_OPTIONS: pack(options)},
        load_assignment=static_assignment(
            USAGE_CLUSTER, settings.host, settings.port, settings.socket
        ),
    )
