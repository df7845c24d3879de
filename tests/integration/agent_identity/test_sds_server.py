"""The local SDS server over gRPC: the secrets Envoy would receive, and their updates."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

from tests.integration.agent_identity.conftest import Served
from tiermesh.agents.identity import SVID_SDS_NAME, LocalSdsServer, SvidStore

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
STREAM = "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"


def _secrets(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    found = {}
    for item in response.resources:
        secret = secret_pb2.Secret()
        item.Unpack(secret)
        found[secret.name] = secret
    return found


async def test_stream_secrets_serves_and_updates_the_svid(served: Served) -> None:
    store = served.store
    async with LocalSdsServer(store, "127.0.0.1:0") as sds:
        assert not sds.address.endswith(":0")
        async with grpc.aio.insecure_channel(sds.address) as channel:
            call: Any = channel.stream_stream(
                STREAM,
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )()  # type: ignore[call-arg]
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    type_url=SECRET, resource_names=[SVID_SDS_NAME], node={"id": "any-node"}
                )
            )
            first = await asyncio.wait_for(call.read(), 5)
            secret = _secrets(first)[SVID_SDS_NAME]
            assert secret.tls_certificate.private_key.inline_bytes == store.require().key_pem()
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    type_url=SECRET,
                    resource_names=[SVID_SDS_NAME],
                    version_info=first.version_info,
                    response_nonce=first.nonce,
                )
            )
            renewed = await served.rotator.rotate_now()
            second = await asyncio.wait_for(call.read(), 5)
            chain = _secrets(second)[SVID_SDS_NAME].tls_certificate.certificate_chain
            assert chain.inline_bytes == renewed.chain_pem()
            assert second.version_info != first.version_info
            call.cancel()
        assert sds.pushes == 2


async def test_unix_socket_is_owner_only_and_removed(sock_dir: Path) -> None:
    path = sock_dir / "sds.sock"
    sds = LocalSdsServer(SvidStore(), f"unix:{path}")
    await sds.start()
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    await sds.stop()
    assert not path.exists()
    await sds.stop()
