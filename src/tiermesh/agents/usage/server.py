"""The access-log gRPC server (``envoy.service.accesslog.v3.AccessLogService``).

Envoy's ``envoy.access_loggers.http_grpc`` (compiled by the control plane when the node
registers a ``usage_port``) streams one entry per request. :func:`usage_from_entry` takes
tenant (request header ``x-tiermesh-tenant``), answering backend (custom tag
``tiermesh.backend``) and the token counts (dynamic metadata ``tiermesh.usage``, which
the usage Lua filter sets from the answer's ``usage``). Each message's entries go to
:meth:`UsageLedger.record` together, after each went to the optional ``observer`` (the
node's metrics, :mod:`tiermesh.agents.metrics.edge`). A failing ledger write is logged and
the stream goes on: accounting never breaks Envoy's logger.

Every answer is charged. Where the entry carries no usage although a backend answered a
completion (a ``POST`` to a path ending in ``/completions`` with a 2xx status and an
upstream address), the usage could not be read: a stream the filter could not ask for
usage (a chunked or HTTP/2 upload without ``content-length``, a body over the filter's
bound), a backend that ignores ``include_usage``, a stream cut before its usage chunk, a
``usage`` object the filter missed. Such an entry is charged an estimate
(:func:`estimate`, ``Usage.estimated`` set): the request body's bytes as prompt tokens and
the answer body's bytes as completion tokens, :data:`CHARS_PER_TOKEN` bytes a token (the
rate of ext_authz's request estimate). Why these numbers: Envoy counts both byte totals
itself (``request_body_bytes``, ``response_body_bytes``), so they cover the whole body
whatever its framing, ext_authz's bound included, and no client can forge them, with no
header to carry between filters and nothing to strip before the upstream. They count JSON
and SSE framing as text, so the estimate is high (a streamed answer's framing is most of
its bytes): it errs towards the budget, never away from it. A client that wants exact
charges asks for usage (``"stream_options": {"include_usage": true}``), which it then also
receives. Entries without a tenant, local replies (no upstream: ext_authz's denials,
no route), other paths and methods, and non-2xx answers are not charged; nor is a request
whose client left before the answer's headers (status 0), though its backend may have
started work.

Every entry is also classified (:func:`~tiermesh.agents.usage.answers.classify`: which
tier answered, first choice or fallback, or refused) into the ledger's answer tally, which
rides on the next usage report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from tiermesh.agents.authz.tokens import CHARS_PER_TOKEN
from tiermesh.agents.usage.answers import classify
from tiermesh.agents.usage.errors import UsageError
from tiermesh.agents.usage.ledger import Usage, UsageLedger

__all__ = [
    "CHARS_PER_TOKEN",
    "AccessLogService",
    "EntryObserver",
    "estimate",
    "start_usage_server",
    "usage_from_entry",
]

log = logging.getLogger("tiermesh.agent.usage")

TENANT_HEADER = "x-tiermesh-tenant"
BACKEND_TAG = "tiermesh.backend"
METADATA_NAMESPACE = "tiermesh.usage"


def estimate(request_body_bytes: int, response_body_bytes: int) -> tuple[int, int]:
    """(prompt, completion) tokens estimated from the bodies' sizes: each rounded up from
    bytes / :data:`CHARS_PER_TOKEN` (module doc)."""
    return (
        -(-max(0, request_body_bytes) // CHARS_PER_TOKEN),
        -(-max(0, response_body_bytes) // CHARS_PER_TOKEN),
    )


def _answered_completion(entry: accesslog_pb2.HTTPAccessLogEntry) -> bool:
    """A backend answered a completion request with a 2xx status."""
    request = entry.request
    if request.request_method != base_pb2.POST:
        return False
    if not request.path.split("?", 1)[0].endswith("/completions"):
        return False
    status = int(entry.response.response_code.value)
    return 200 <= status < 300 and bool(entry.common_properties.HasField("upstream_remote_address"))


def usage_from_entry(entry: accesslog_pb2.HTTPAccessLogEntry) -> Usage | None:
    """The usage one access-log entry reports, an estimate where a backend answered and
    its usage could not be read, or None (see the module doc)."""
    tenant = entry.request.request_headers.get(TENANT_HEADER, "")
    if not tenant:
        return None
    common = entry.common_properties
    backend = common.custom_tags.get(BACKEND_TAG) or None
    fields = common.metadata.filter_metadata.get(METADATA_NAMESPACE)
    prompt = fields.fields.get("prompt_tokens") if fields is not None else None
    completion = fields.fields.get("completion_tokens") if fields is not None else None
    if prompt is not None and completion is not None:
        return Usage(
            tenant,
            backend,
            max(0, int(prompt.number_value)),
            max(0, int(completion.number_value)),
        )
    if not _answered_completion(entry):
        return None
    guessed = estimate(entry.request.request_body_bytes, entry.response.response_body_bytes)
    return Usage(tenant, backend, *guessed, estimated=True)


EntryObserver = Callable[[accesslog_pb2.HTTPAccessLogEntry], object]
"""Told of every HTTP entry as it arrives, before accounting (the node's metrics). Runs on
the server's loop: it must be quick; an exception it raises is logged and ignored."""


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Feeds every stream's HTTP entries to one :class:`UsageLedger`, whose writes run in a
    worker thread (the ledger is thread-safe), and to ``observer`` (optional)."""

    def __init__(self, ledger: UsageLedger, observer: EntryObserver | None = None) -> None:
        self._ledger = ledger
        self._observer = observer

    async def _observe(self, entries: Iterable[accesslog_pb2.HTTPAccessLogEntry]) -> None:
        """Each entry to the observer, yielding to the loop between entries: a batch of
        them never holds up the ext_authz checks served on the same loop."""
        if self._observer is None:
            return
        for entry in entries:
            try:
                self._observer(entry)
            except Exception:
                log.exception("the access-log observer failed")
            await asyncio.sleep(0)

    async def StreamAccessLogs(  # noqa: N802 - the gRPC method name
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext[
            als_pb2.StreamAccessLogsMessage, als_pb2.StreamAccessLogsResponse
        ],
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            logged = message.http_logs.log_entry
            await self._observe(logged)
            counted = [a for a in map(classify, logged) if a is not None]
            if counted:
                self._ledger.answers.add(counted)
            entries = [usage_from_entry(e) for e in logged]
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
    ledger: UsageLedger, address: str = "127.0.0.1:0", observer: EntryObserver | None = None
) -> tuple[grpc.aio.Server, int]:
    """Start serving ``ledger`` on ``address`` (plaintext; Envoy is on the same node).
    Prefer ``unix:/path`` in a private directory, made mode 0600 (the agent does): on a
    loopback port any local process could charge forged usage to any tenant. Returns the
    started server and its port (1 for a Unix socket); stop it with
    ``await server.stop(grace)``.

    Raises:
        RuntimeError: the address cannot be bound.
    """
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogService(ledger, observer), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot bind the usage server to {address}")
    await server.start()
    return server, port
