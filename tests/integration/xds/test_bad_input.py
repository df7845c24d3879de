"""Bad requests close only their own stream with a clear status; the server keeps serving."""

from __future__ import annotations

import grpc
import pytest
from envoy.config.core.v3 import base_pb2

from tests.integration.xds.conftest import Served
from tests.support.adsclient import AdsClient
from tests.support.resources import mesh
from tiermesh.xds import AdsServer, SnapshotCache, start_server, typeurls

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_unknown_type_url_is_refused_and_others_keep_working(
    served: Served, delta: bool
) -> None:
    served.cache.set_snapshot("good", mesh({"a": 1}))
    async with (
        AdsClient(served.target, "good", delta=delta) as good,
        AdsClient(served.target, "bad", delta=delta) as bad,
    ):
        await good.send(type_url=typeurls.CLUSTER)
        await good.recv()
        await bad.send(type_url="type.googleapis.com/no.such.Type")
        code, details = await bad.code()
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "no.such.Type" in details
        served.cache.set_snapshot("good", mesh({"a": 1, "b": 2}))
        response = await good.recv()
        assert len(response.resources) >= 1


@pytest.mark.parametrize("method", ["StreamAggregatedResources", "DeltaAggregatedResources"])
async def test_garbage_bytes_are_refused(served: Served, method: str) -> None:
    async with grpc.aio.insecure_channel(served.target) as channel:
        call = channel.stream_stream(ADS + method)()
        await call.write(b"\xff\xff\xff\xff\x0f")
        code = await call.code()
        details = await call.details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "are not a" in details


async def test_first_request_without_node_is_refused(served: Served) -> None:
    async with AdsClient(served.target, "x") as client:
        await client.send(type_url=typeurls.CLUSTER, node=base_pb2.Node())
        code, details = await client.code()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.id" in details


async def test_node_id_change_mid_stream_is_refused(served: Served) -> None:
    served.cache.set_snapshot("n1", mesh({"a": 1}))
    async with AdsClient(served.target, "n1") as client:
        await client.send(type_url=typeurls.CLUSTER)
        await client.recv()
        await client.send(type_url=typeurls.LISTENER, node=base_pb2.Node(id="n2"))
        code, details = await client.code()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'n2'" in details


async def test_unauthorized_node_gets_permission_denied() -> None:
    cache = SnapshotCache()
    ads = AdsServer(
        cache, authorize=lambda node, _ctx: "not on the list" if node.id != "ok" else None
    )
    server, port = await start_server(ads, "127.0.0.1:0")
    try:
        async with AdsClient(f"127.0.0.1:{port}", "intruder") as client:
            await client.send(type_url=typeurls.CLUSTER)
            code, details = await client.code()
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "intruder" in details
        assert "not on the list" in details
        assert ads.status.get("intruder") is None
    finally:
        await server.stop(grace=None)
