"""The request policy follows ``policy push`` on a real etcd, a real reconciler and node
API, and a real agent request policy (ext_authz over gRPC, signed decision log): bundle A
decides, then B within a bound with B's revision on the record, and a bundle whose
request policy does not load leaves B deciding."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc

from tests.support.svids import node_material
from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.agents.config import AgentConfig
from tiermesh.agents.decisionlog.spool import SpoolPaths, decode_line, list_segments
from tiermesh.agents.identity import SvidStore
from tiermesh.agents.runtime.requests import RequestPolicy
from tiermesh.agents.runtime.session import RegistrySession
from tiermesh.controlplane.api import DecisionRecord, NodeLoad, NodeRegistration
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.server_cert import issue_server_certificate
from tiermesh.controlplane.identity.tokens import JoinTokens
from tiermesh.controlplane.nodeapi import (
    NodeApiServer,
    NodeIdentityService,
    NodeRegistryService,
    start_node_api,
)
from tiermesh.controlplane.reconciler import Reconciler
from tiermesh.controlplane.store import Bundle, EtcdStore
from tiermesh.procs.etcd import EtcdServer
from tiermesh.rego import RegorusEngine
from tiermesh.xds import SnapshotCache

pytestmark = pytest.mark.etcd

TD = "mesh.example"
ADOPTED_WITHIN_S = 10.0
SHIPPED = policy_files()["request/request.rego"].decode()
PAUSED = SHIPPED + '\n_denials contains "paused by bundle b" if true\n'
UNDEFINED = SHIPPED.replace("\ndecision := {", "\n_not_the_decision := {")
ACME_PUBLIC = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}


def with_request_policy(source: str) -> dict[str, bytes]:
    return {**policy_files(), "request/request.rego": source.encode()}


@dataclass
class Mesh:
    store: EtcdStore
    reconciler: Reconciler
    api: NodeApiServer
    requests: RequestPolicy
    session: RegistrySession
    stub: external_auth_pb2_grpc.AuthorizationStub
    spool: Path

    async def push(self, files: dict[str, bytes]) -> Bundle:
        """Push straight to etcd, as ``policy push`` ends, and wait until it is served."""
        current = await self.store.get_bundle()
        pushed = await self.store.push_bundle(files, expected_revision=current.revision)
        await self.reconciler.wait_for(lambda r: r.ok and r.bundle_revision == pushed.revision)
        return pushed

    async def check(
        self, body: bytes = b'{"messages": [{"role": "user", "content": "hi"}]}'
    ) -> tuple[int, DecisionRecord]:
        """One ext_authz check of a chat POST with ``body``; (HTTP status, its decision
        record from the spool)."""
        http = attribute_context_pb2.AttributeContext.HttpRequest(
            method="POST", path="/v1/chat/completions", headers=ACME_PUBLIC, raw_body=body
        )
        response = await self.stub.Check(
            external_auth_pb2.CheckRequest(
                attributes=attribute_context_pb2.AttributeContext(
                    request=attribute_context_pb2.AttributeContext.Request(http=http)
                )
            ),
            timeout=5,
        )
        headers = response.ok_response.headers or response.denied_response.headers
        decision_id = next(h.header.value for h in headers if h.header.key.endswith("decision-id"))
        status = 200 if response.HasField("ok_response") else response.denied_response.status.code
        return status, self.record(decision_id)

    def record(self, decision_id: str) -> DecisionRecord:
        for _, path in list_segments(SpoolPaths(self.spool)):
            for line in path.read_bytes().splitlines(keepends=True):
                record = decode_line(line).record
                if str(record.decision_id) == decision_id:
                    return record
        raise AssertionError(f"decision {decision_id} not in the spool")


async def _idle() -> NodeLoad:
    return NodeLoad()


@pytest.fixture
async def mesh(etcd: EtcdServer, tmp_path: Path) -> AsyncIterator[Mesh]:
    ca = LocalCertificateAuthority.create(CaConfig(TD))
    async with EtcdStore(etcd.endpoint, root=f"/test-{uuid.uuid4().hex}/tiermesh/v1/") as store:
        await store.push_bundle(policy_files(), expected_revision=0)
        reconciler = Reconciler(
            store, RegorusEngine, FakeCompiler(), SnapshotCache(), debounce_s=0.05
        )
        await reconciler.start()
        await reconciler.wait_for(lambda r: r.ok and r.bundle_revision == 1)
        registry = NodeRegistryService(store, TD, lease_ttl_s=2, bundles=reconciler)
        api = await start_node_api(
            NodeIdentityService(ca, JoinTokens(store)),
            certificate=issue_server_certificate(ca, now=dt.datetime.now(dt.UTC)),
            bundle=ca.bundle(),
            registry=registry,
        )
        svids = SvidStore()
        svids.update(node_material(ca, "edge-1"))  # type: ignore[arg-type]
        config = AgentConfig.model_validate(
            {
                "node": {"id": "edge-1", "tier": "local"},
                "control_plane": {"trust_domain": TD, "ads": ["127.0.0.1:1"],
                                  "node_api": [api.node_target], "join": [api.join_target]},
                "identity": {"state_dir": str(tmp_path / "edge-1")},
                "authz": {"enabled": True},
            }
        )  # fmt: skip
        requests = RequestPolicy(config, svids)
        await requests.start()
        session = RegistrySession(
            svids,
            NodeRegistration(node_id="edge-1", tier="local", region="eu-west", app_port=18080,
                             authz_socket=str(requests.socket)),
            addresses=[api.node_target], server_name=control_plane_dns_name(TD),
            measure=_idle, interval_s=0.2, on_bundle=requests.announce,
        )  # fmt: skip
        running = asyncio.create_task(session.run())
        channel = grpc.aio.insecure_channel(f"unix:{requests.socket}")
        try:
            await session.wait_registered(5.0)
            yield Mesh(
                store, reconciler, api, requests, session,
                external_auth_pb2_grpc.AuthorizationStub(channel), config.decision_dir,
            )  # fmt: skip
        finally:
            await channel.close()
            session.leave()
            await asyncio.gather(running, return_exceptions=True)
            await requests.stop()
            await api.stop(grace=None)
            await reconciler.aclose()


async def test_the_agent_follows_pushed_bundles_and_keeps_the_last_good_one(mesh: Mesh) -> None:
    a = mesh.reconciler.served_bundle
    assert a is not None
    status, record = await mesh.check()
    assert status == 200
    assert record.bundle_revision == f"sha256:{a.sha256}"
    assert record.etcd_revision == a.etcd_revision

    # B pauses every request: the next decisions use it, without a restart.
    pushed_at = time.monotonic()
    b = await mesh.push(with_request_policy(PAUSED))
    served_b = mesh.reconciler.served_bundle
    assert served_b is not None
    assert served_b.sha256 == b.sha256
    async with asyncio.timeout(ADOPTED_WITHIN_S):
        while (await mesh.check())[0] == 200:  # noqa: ASYNC110 - polling decisions
            await asyncio.sleep(0.02)
    took_s = time.monotonic() - pushed_at
    status, record = await mesh.check()
    assert status == 403
    assert record.result["reason"] == "paused by bundle b"
    assert record.bundle_revision == f"sha256:{b.sha256}"
    assert record.etcd_revision == served_b.etcd_revision
    print(f"push to first decision with bundle B: {took_s:.3f} s")

    # C compiles (its routing is A's) but its request decision is undefined: refused on the
    # node, where B keeps deciding.
    c = await mesh.push(with_request_policy(UNDEFINED))
    sync = mesh.requests.sync
    assert sync is not None
    async with asyncio.timeout(ADOPTED_WITHIN_S):
        while sync.rejected is None or sync.rejected.sha256 != c.sha256:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert "undefined" in (sync.last_error or "")
    status, record = await mesh.check()
    assert status == 403
    assert record.bundle_revision == f"sha256:{b.sha256}"
