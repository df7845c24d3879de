"""The access-log gRPC server (``envoy.service.accesslog.v3.AccessLogService``).

Envoy's ``envoy.access_loggers.http_grpc`` (compiled by the control plane when the node
registers a ``usage_port``) streams one entry per request. :func:`usage_from_entry` takes
tenant (request header ``x-tiermesh-tenant``), answering backend (custom tag
``tiermesh.backend``) and the token counts (dynamic metadata ``tiermesh.usage``); entries
without a tenant or without usage (local replies, answers without ``usage``) are skipped.
Each message's entries go to :meth:`UsageLedger.record` together. A failing ledger write
is logged and the stream goes on: accounting never breaks Envoy's logger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from tiermesh.agents.usage.errors import UsageError
from tiermesh.agents.usage.ledger import Usage, UsageLedger

__all__ = ["AccessLogService", "start_usage_server", "usage_from_entry"]

log = logging.getLogger("tiermesh.agent.usage")

TENANT_HEADER = "x-tiermesh-tenant"
BACKEND_TAG = "tiermesh.backend"
METADATA_NAMESPACE = "tiermesh.usage"


def usage_from_entry(entry: accesslog_pb2.HTTPAccessLogEntry) -> Usage | None:
    """The usage one access-log entry reports, or None (see the module doc)."""
    tenant = entry.request.request_headers.get(TENANT_HEADER, "")
    common = entry.common_properties
    fields = common.metadata.filter_metadata.get(METADATA_NAMESPACE)
    if not tenant or fields is None:
        return None
    prompt = fields.fields.get("prompt_tokens")
    completion = fields.fields.get("completion_tokens")
    if prompt is None or completion is None:
        return None
    backend = common.custom_tags.get(BACKEND_TAG) or None
    return Usage(
        tenant,
        backend,
        max(0, int(prompt.number_value)),
        max(0, int(completion.number_value)),
    )


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Feeds every stream's HTTP entries to one :class:`UsageLedger`, whose writes run in a
    worker thread (the ledger is thread-safe)."""

    def __init__(self, ledger: UsageLedger) -> None:
        self._ledger = ledger

    async def StreamAccessLogs(  # noqa: N802 - the gRPC method name
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext[
            als_pb2.StreamAccessLogsMessage, als_pb2.StreamAccessLogsResponse
        ],
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            entries = [usage_from_entry(e) for e in message.http_logs.log_entry]
            found = [u for u in entries if u is not None]
            if not found:
                continue
            try:
                # The ledger fsyncs its budget file: off the loop that answers ext_authz.
                await asyncio.to_thread(self._ledger.record, found)
            except UsageError as exc:
                log.warning("%s", exc)
        return als_pb2.StreamAccessLogsResponse()


async def start_usage_server(
    ledger: UsageLedger, address: str = "127.0.0.1:0"
) -> tuple[grpc.aio.Server, int]:
    """Start serving ``ledger`` on ``address`` (plaintext; bind it to loopback: Envoy is on
    the same node). Returns the started server and its port; stop it with
    ``await server.stop(grace)``.

    Raises:
        RuntimeError: the address cannot be bound.
    """
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogService(ledger), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot bind the usage server to {address}")
    await server.start()
    return server, port
