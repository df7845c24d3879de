"""A node registry on a real etcd behind a real mTLS node port, and SVIDs to call it with."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest

from tests.support.svids import issue_svid, node_api_channel
from tiermesh.controlplane.api import SessionMessage, SessionReply, registry_method_path
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.server_cert import issue_server_certificate
from tiermesh.controlplane.identity.tokens import JoinTokens
from tiermesh.controlplane.nodeapi import (
    NodeApiServer,
    NodeIdentityService,
    NodeRegistryService,
    start_node_api,
)
from tiermesh.controlplane.store import EtcdStore
from tiermesh.procs.etcd import EtcdServer

TD = "mesh.example"
LEASE_TTL_S = 2
LOAD_INTERVAL_S = 0.5

Call = grpc.aio.StreamStreamCall[SessionMessage, SessionReply]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@dataclass
class Registry:
    ca: LocalCertificateAuthority
    store: EtcdStore
    api: NodeApiServer

    def svid(self, node_id: str) -> tuple[bytes, bytes]:
        """(chain PEM, key PEM) of a fresh SVID for ``node_id``."""
        return issue_svid(self.ca, node_id)

    def channel(self, node_id: str | None) -> grpc.aio.Channel:
        """A channel to the node port with ``node_id``'s SVID, or to the join port (None)."""
        return node_api_channel(self.ca, self.api, TD, node_id)


def open_session(channel: grpc.aio.Channel) -> Call:
    method = channel.stream_stream(
        registry_method_path(),
        request_serializer=lambda m: m.model_dump_json().encode(),
        response_deserializer=SessionReply.model_validate_json,
    )
    return method()  # type: ignore[return-value]


@pytest.fixture
async def registry(etcd: EtcdServer) -> AsyncIterator[Registry]:
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    ca = LocalCertificateAuthority.create(CaConfig(TD))
    certificate = issue_server_certificate(ca, now=dt.datetime.now(dt.UTC))
    async with EtcdStore(etcd.endpoint, root=root) as store:
        service = NodeIdentityService(ca, JoinTokens(store))
        registry = NodeRegistryService(
            store, TD, lease_ttl_s=LEASE_TTL_S, load_interval_s=LOAD_INTERVAL_S
        )
        api = await start_node_api(
            service, certificate=certificate, bundle=ca.bundle(), registry=registry
        )
        try:
            yield Registry(ca, store, api)
        finally:
            await api.stop(grace=None)
