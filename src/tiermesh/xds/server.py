"""The ADS gRPC service (SotW and delta) on ``grpc.aio``.

This module is the edge where library errors become gRPC status codes. The server owns
streams, nonces and ACK state; it sees snapshots only through a
:class:`~tiermesh.xds.cache.SnapshotSource`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from tiermesh.xds.cache import SnapshotSource
from tiermesh.xds.delta import DeltaStream
from tiermesh.xds.errors import (
    InvalidRequestError,
    NodeNotAuthorizedError,
    UnknownTypeUrlError,
    XdsError,
)
from tiermesh.xds.sotw import SotwStream
from tiermesh.xds.status import REJECTED, Callbacks, StatusRegistry
from tiermesh.xds.stream import (
    NodeAuthorizer,
    ServicerContext,
    StreamBase,
    StreamEnv,
    Undecodable,
    request_decoder,
)

__all__ = ["SDS_SERVICE", "SERVICE", "AdsServer", "server_options", "start_server"]

log = logging.getLogger("tiermesh.xds")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
SDS_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
PENDING_CALLS = 20_000
"""New streams gRPC core may queue before the server picks them up (a reconnect storm)."""

_CODES: dict[type[XdsError], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownTypeUrlError: grpc.StatusCode.INVALID_ARGUMENT,
    NodeNotAuthorizedError: grpc.StatusCode.PERMISSION_DENIED,
}


def _encoded(response: bytes) -> bytes:
    return response


class AdsServer:
    """Serves ``StreamAggregatedResources`` and ``DeltaAggregatedResources`` from a source.

    Construct it on (or before starting) the event loop that runs the gRPC server; all
    streams, the status registry and the callbacks run on that loop. A request that cannot
    be served (undecodable bytes, no node, unknown type URL, an unauthorized node) closes
    only its own stream with INVALID_ARGUMENT or PERMISSION_DENIED and a log line.
    """

    def __init__(
        self,
        source: SnapshotSource,
        *,
        status: StatusRegistry | None = None,
        callbacks: Callbacks | None = None,
        authorize: NodeAuthorizer | None = None,
    ) -> None:
        self.status = status if status is not None else StatusRegistry()
        self._env = StreamEnv(source, self.status, callbacks or Callbacks(), authorize)

    def add_to(self, server: grpc.aio.Server) -> None:
        """Register both ADS methods on ``server``."""
        self._register(server, SERVICE, "StreamAggregatedResources", "DeltaAggregatedResources")

    def add_sds_to(self, server: grpc.aio.Server) -> None:
        """Also serve the same snapshots as a standalone SDS service.

        Envoy's ``api_config_source`` of type GRPC for secrets calls
        ``SecretDiscoveryService.StreamSecrets`` (or ``DeltaSecrets``) rather than ADS; the
        streams behave exactly as ADS streams that only ask for secrets.
        """
        self._register(server, SDS_SERVICE, "StreamSecrets", "DeltaSecrets")

    def _register(self, server: grpc.aio.Server, service: str, sotw: str, delta: str) -> None:
        handlers = {
            sotw: grpc.stream_stream_rpc_method_handler(
                self._sotw,
                request_deserializer=request_decoder(discovery_pb2.DiscoveryRequest),
                response_serializer=_encoded,
            ),
            delta: grpc.stream_stream_rpc_method_handler(
                self._delta,
                request_deserializer=request_decoder(discovery_pb2.DeltaDiscoveryRequest),
                response_serializer=_encoded,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))

    async def _sotw(
        self,
        requests: AsyncIterator[discovery_pb2.DiscoveryRequest | Undecodable],
        context: ServicerContext,
    ) -> AsyncIterator[bytes]:
        async for response in self._serve(SotwStream(self._env, context), requests, context):
            yield response

    async def _delta(
        self,
        requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest | Undecodable],
        context: ServicerContext,
    ) -> AsyncIterator[bytes]:
        async for response in self._serve(DeltaStream(self._env, context), requests, context):
            yield response

    async def _serve(
        self,
        stream: StreamBase[discovery_pb2.DiscoveryRequest]
        | StreamBase[discovery_pb2.DeltaDiscoveryRequest],
        requests: AsyncIterator[object],
        context: ServicerContext,
    ) -> AsyncIterator[bytes]:
        try:
            async for response in stream.run(requests):
                yield response
        except XdsError as exc:
            code = _CODES.get(type(exc), grpc.StatusCode.INTERNAL)
            REJECTED.labels(type(exc).__name__).inc()
            log.warning(
                "xds stream refused peer=%s node=%s code=%s: %s",
                context.peer(),
                stream.node_id or "?",
                code.name,
                exc,
            )
            await context.abort(code, str(exc))


_SERVER_DEFAULTS: Final[Mapping[str, int | str]] = {
    "grpc.so_reuseport": 0,
    "grpc.keepalive_time_ms": 30_000,
    # A control-plane restart makes every node reconnect at once. gRPC core refuses calls
    # the application has not picked up yet beyond these limits (defaults 1 000 / 3 000),
    # silently and at random; 5 000 nodes overflowed them.
    "grpc.server.max_pending_requests": PENDING_CALLS,
    "grpc.server.max_pending_requests_hard_limit": PENDING_CALLS,
    "grpc.http2.min_ping_interval_without_data_ms": 10_000,
}


def server_options(
    overrides: Sequence[tuple[str, int | str]] = (),
) -> list[tuple[str, int | str]]:
    """The ADS server's channel arguments: the defaults, each replaced by an override of
    the same name. gRPC core keeps the *first* of two arguments with one name, so appending
    an override silently does nothing (a control plane that asked to accept Envoy's
    one-second keepalive PINGs kept the 10 s default and sent every pinging Envoy a
    ``too_many_pings`` GOAWAY)."""
    merged = dict(_SERVER_DEFAULTS)
    merged.update(overrides)
    return list(merged.items())


async def start_server(
    ads: AdsServer,
    address: str,
    *,
    credentials: grpc.ServerCredentials | None = None,
    options: Sequence[tuple[str, int | str]] = (),
    sds: bool = False,
) -> tuple[grpc.aio.Server, int]:
    """Start a gRPC server with ``ads`` on ``address`` ("host:port", port 0 picks one).

    Returns the started server and its bound port (0 for a ``unix:`` address). Port reuse
    is off, so a second server cannot silently share a port with the first. ``sds`` also
    serves the snapshots as the standalone SecretDiscoveryService.
    """
    server = grpc.aio.server(options=server_options(options))
    ads.add_to(server)
    if sds:
        ads.add_sds_to(server)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    return server, port
