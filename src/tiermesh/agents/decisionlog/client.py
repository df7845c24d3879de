"""Shipping records to the control plane's audit collector over mutual TLS.

:class:`GrpcShipClient` calls ``tiermesh.audit.v1.Collector/Ship`` with the node's current
SVID as its client certificate. It opens one channel per call, so a rotated SVID is used
from the next batch on (one TLS handshake per batch is small next to a batch of records).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import grpc

from tiermesh.agents.decisionlog.errors import ShipFailed
from tiermesh.agents.identity import SvidMaterial
from tiermesh.controlplane.api.decision import (
    MAX_SHIP_BYTES,
    ShipRequest,
    ShipResponse,
    audit_method_path,
)

__all__ = ["RETRYABLE_CODES", "GrpcShipClient", "ShipClient"]

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)
"""Codes after which the same batch is sent again (the control plane was down, restarted,
or the SVID was about to be renewed). Others mean the batch itself was refused."""


def _encode(request: ShipRequest) -> bytes:
    return request.model_dump_json().encode()


class ShipClient(Protocol):
    """What :class:`~tiermesh.agents.decisionlog.Shipper` needs: deliver one batch.

    ``ship`` returns only after the collector stored every record (or had it already);
    it raises :class:`ShipFailed` otherwise, ``retryable`` saying whether sending the same
    batch again can help.
    """

    async def ship(self, request: ShipRequest) -> ShipResponse: ...


class GrpcShipClient:
    """Ships to ``target`` (``host:port``) with ``material()``'s SVID; checks the server
    certificate against the material's bundle and the DNS name ``server_name``.

    Safe to call from any task of one event loop; calls share nothing.
    """

    def __init__(
        self,
        target: str,
        material: Callable[[], SvidMaterial],
        *,
        server_name: str,
        timeout_s: float = 10.0,
    ) -> None:
        self._target = target
        self._material = material
        self._server_name = server_name
        self._timeout_s = timeout_s

    async def ship(self, request: ShipRequest) -> ShipResponse:
        material = self._material()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=material.bundle_pem(),
            private_key=material.key_pem(),
            certificate_chain=material.chain_pem(),
        )
        options = [
            ("grpc.ssl_target_name_override", self._server_name),
            ("grpc.max_send_message_length", MAX_SHIP_BYTES),
        ]
        async with grpc.aio.secure_channel(self._target, credentials, options=options) as channel:
            call = channel.unary_unary(
                audit_method_path(),
                request_serializer=_encode,
                response_deserializer=ShipResponse.model_validate_json,
            )
            try:
                response: ShipResponse = await call(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                raise ShipFailed(
                    f"{code.name}: {exc.details() or ''}", retryable=code in RETRYABLE_CODES
                ) from exc
        return response
