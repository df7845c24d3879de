"""The xDS server's metrics against a scripted client over real gRPC: a push and its ACK
move the push→ACK histogram once, a NACK does not, and connected nodes count nodes (not
streams)."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from tests.integration.xds.conftest import Served
from tests.support.adsclient import AdsClient
from tests.support.resources import mesh
from tiermesh.xds import typeurls

CDS = typeurls.CLUSTER


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_push_and_its_ack_are_timed_once_and_nodes_are_counted(served: Served) -> None:
    acked = sample("tiermesh_xds_push_ack_seconds_count", type="cds", mode="sotw")
    nodes = sample("tiermesh_xds_connected_nodes")
    served.cache.set_snapshot("n1", mesh({"a": 1}))
    async with AdsClient(served.target, "n1") as client, AdsClient(served.target, "n1") as twin:
        await client.send(type_url=CDS)
        first = await client.recv()
        await client.send(type_url=CDS, version_info=first.version_info, response_nonce=first.nonce)
        await client.expect_nothing()
        await twin.send(type_url=CDS)
        await twin.recv()
        assert sample("tiermesh_xds_connected_nodes") == nodes + 1
        assert sample("tiermesh_xds_push_ack_seconds_count", type="cds", mode="sotw") == acked + 1

        served.cache.set_snapshot("n1", mesh({"a": 1, "bad": 2}))
        second = await client.recv()
        await client.send(
            type_url=CDS,
            version_info=first.version_info,
            response_nonce=second.nonce,
            error="cluster 'bad': invalid",
        )
        await client.expect_nothing()
        assert sample("tiermesh_xds_push_ack_seconds_count", type="cds", mode="sotw") == acked + 1
    # The server sees the streams end a moment after the client closed them.
    for _ in range(200):
        if sample("tiermesh_xds_connected_nodes") == nodes:
            break
        await asyncio.sleep(0.01)
    assert sample("tiermesh_xds_connected_nodes") == nodes
