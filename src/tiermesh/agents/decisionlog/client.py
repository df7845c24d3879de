"""Shipping records to the control plane's audit collector over mutual TLS.

:class:`GrpcShipClient` calls ``tiermesh.audit.v1.Collector/Ship`` with the node's current
SVID as its client certificate. It opens one channel per call, so a rotated SVID is used
from the next batch on (one TLS handshake per batch is small next to a batch of records).
Given several collectors (one per control-plane replica) it sticks to the one that last
answered and moves to the next when that one cannot be reached. A batch whose answer was
lost may then be stored by two replicas; readers deduplicate by decision id
(:func:`tiermesh.controlplane.audit.merge_stores`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
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

log = logging.getLogger("tiermesh.agents.decisionlog")

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


_MOVE_ON = frozenset({grpc.StatusCode.UNAVAILABLE.name, grpc.StatusCode.DEADLINE_EXCEEDED.name})
"""Codes after which the same batch is offered to the next collector at once."""


_SLACK_S = 1.0
_CLOSE_S = 1.0


async def _close(channel: grpc.aio.Channel) -> None:
    """Close ``channel``, waiting at most a second: closing a connection to a frozen peer
    may wait on it, and the shipper must go on (the channel is dropped either way)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_CLOSE_S):
            await channel.close(None)


class GrpcShipClient:
    """Ships to ``target`` (``host:port``, or several: one per control-plane replica) with
    ``material()``'s SVID; checks the server certificate against the material's bundle and
    the DNS name ``server_name``. With several targets a call that cannot reach one tries
    the next (each at most once per call) and later calls start at the one that answered.

    Safe to call from any task of one event loop.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        material: Callable[[], SvidMaterial],
        *,
        server_name: str,
        timeout_s: float = 10.0,
    ) -> None:
        self._targets = (target,) if isinstance(target, str) else tuple(target)
        if not self._targets:
            raise ValueError("at least one audit collector address is needed")
        self._first = 0
        self._material = material
        self._server_name = server_name
        self._timeout_s = timeout_s

    @property
    def target(self) -> str:
        """The collector the next call tries first."""
        return self._targets[self._first]

    async def ship(self, request: ShipRequest) -> ShipResponse:
        count = len(self._targets)
        for step in range(count):
            index = (self._first + step) % count
            try:
                response = await self._ship_to(self._targets[index], request)
            except ShipFailed as exc:
                if exc.code not in _MOVE_ON or step == count - 1:
                    raise
                log.warning("audit collector %s: %s; trying the next", self._targets[index], exc)
                continue
            self._first = index
            return response
        raise AssertionError("unreachable: the last target's failure is raised")

    async def _ship_to(self, target: str, request: ShipRequest) -> ShipResponse:
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
        channel = grpc.aio.secure_channel(target, credentials, options=options)
        call = channel.unary_unary(
            audit_method_path(),
            request_serializer=_encode,
            response_deserializer=ShipResponse.model_validate_json,
        )
        try:
            # gRPC's deadline, and our own bound on the whole attempt: a collector frozen
            # mid-call (SIGSTOP, a hung host) must not hold the shipper.
            async with asyncio.timeout(self._timeout_s + _SLACK_S):
                response: ShipResponse = await call(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise ShipFailed(
                f"{code.name}: {exc.details() or ''}",
                retryable=code in RETRYABLE_CODES,
                code=code.name,
            ) from exc
        except TimeoutError as exc:
            name = grpc.StatusCode.DEADLINE_EXCEEDED.name
            raise ShipFailed(f"{name}: no answer from {target}", code=name) from exc
        finally:
            await _close(channel)
        return response
