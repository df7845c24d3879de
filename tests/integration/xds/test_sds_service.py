"""The snapshots are also served as the standalone SecretDiscoveryService."""

from __future__ import annotations

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from tiermesh.xds import AdsServer, Snapshot, SnapshotCache, start_server, typeurls


async def test_stream_secrets_serves_named_secrets() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("n1", Snapshot.build(secrets=[secret_pb2.Secret(name="svid")]))
    server, port = await start_server(AdsServer(cache), "127.0.0.1:0", sds=True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets()
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    node=base_pb2.Node(id="n1"), type_url=typeurls.SECRET, resource_names=["svid"]
                )
            )
            response = await call.read()
            call.cancel()
        secret = secret_pb2.Secret()
        response.resources[0].Unpack(secret)
        assert secret.name == "svid"
    finally:
        await server.stop(grace=None)
