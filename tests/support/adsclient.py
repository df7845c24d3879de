"""A scripted ADS client for tests: sends exactly the requests a test writes, like Envoy would.

It speaks the real protocol over a real gRPC channel with the xds-protos client stub.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

NOTHING_WAIT_S = 0.3


class AdsClient:
    """One ADS stream (SotW or delta) for one node."""

    def __init__(self, target: str, node_id: str, *, delta: bool = False, cluster: str = "c"):
        self.channel = grpc.aio.insecure_channel(target)
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self.delta = delta
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call: Any = (
            stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        )
        self._sent_node = False
        self._responses: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read_all())

    async def send(self, **fields: Any) -> None:
        """Send a request; the node goes on the first message only."""
        if not self._sent_node and "node" not in fields:
            fields["node"] = self.node
        self._sent_node = True
        error = fields.pop("error", None)
        if error is not None:
            fields["error_detail"] = status_pb2.Status(code=3, message=error)
        cls = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        await self.call.write(cls(**fields))

    async def recv(self, wait: float = 5.0) -> Any:
        response = await asyncio.wait_for(self._responses.get(), wait)
        assert response is not grpc.aio.EOF, "stream ended"
        return response

    async def expect_nothing(self, wait: float = NOTHING_WAIT_S) -> None:
        try:
            response = await asyncio.wait_for(self._responses.get(), wait)
        except TimeoutError:
            return
        raise AssertionError(f"expected no response, got {response}")

    async def _read_all(self) -> None:
        while True:
            try:
                response = await self.call.read()
            except grpc.aio.AioRpcError:
                response = grpc.aio.EOF
            await self._responses.put(response)
            if response is grpc.aio.EOF:
                return

    async def code(self) -> tuple[grpc.StatusCode, str]:
        """Wait for the stream to end; its status code and details."""
        code = await self.call.code()
        details = await self.call.details()
        return code, details

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        await self.channel.close()

    async def __aenter__(self) -> AdsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
