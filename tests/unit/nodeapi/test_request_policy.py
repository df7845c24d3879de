"""The node API's side of request-policy delivery: cutting a bundle's request policy, the
``RequestPolicy`` method over real mTLS gRPC, and bundle announcements on the session."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import grpc
import pytest

from tests.support.svids import node_api_channel
from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.controlplane.api import (
    REQUEST_POLICY_METHOD,
    NodeRegistration,
    RequestPolicyBundle,
    RequestPolicyQuery,
    SessionMessage,
    SessionReply,
    registry_method_path,
)
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.server_cert import issue_server_certificate
from tiermesh.controlplane.identity.tokens import JoinTokens
from tiermesh.controlplane.nodeapi import (
    NodeApiServer,
    NodeIdentityService,
    NodeRegistryService,
    start_node_api,
    status_for,
)
from tiermesh.controlplane.nodeapi.errors import NoRequestPolicy, RequestPolicyTooLarge
from tiermesh.controlplane.nodeapi.policy import RequestPolicies, bundle_ref, request_policy_of
from tiermesh.controlplane.store import Bundle, MemoryStore, bundle_digest

TD = "mesh.example"


def bundle(revision: int, files: Mapping[str, bytes] | None = None) -> Bundle:
    content = dict(policy_files() if files is None else files)
    return Bundle(revision, bundle_digest(content), content, {"git_commit": "abc"}, 40 + revision)


def test_the_request_policy_is_the_request_folder_without_tests_and_the_catalog() -> None:
    served = bundle(2)
    policy = request_policy_of(served)
    assert set(policy.modules) == {"request/request.rego"}
    assert policy.modules["request/request.rego"] == served.files["request/request.rego"].decode()
    assert policy.catalog is not None
    assert [t.name for t in policy.catalog.tenants] == ["acme"]
    assert policy.bundle == bundle_ref(served)
    assert policy.bundle.etcd_revision == 42
    assert policy.provenance == {"git_commit": "abc"}


def test_no_bundle_or_no_request_folder_is_not_found() -> None:
    with pytest.raises(NoRequestPolicy):
        request_policy_of(Bundle(0, bundle_digest({}), {}, {}, 3))
    files = {p: v for p, v in policy_files().items() if not p.startswith("request/")}
    with pytest.raises(NoRequestPolicy) as caught:
        request_policy_of(bundle(1, files))
    assert status_for(caught.value)[0] is grpc.StatusCode.NOT_FOUND


def test_the_encoding_is_made_once_per_bundle_and_bounded() -> None:
    policies = RequestPolicies()
    first = policies.encoded(bundle(1))
    assert policies.encoded(bundle(1)) is first
    assert RequestPolicyBundle.model_validate_json(first).bundle.revision == 1
    policies.encoded(bundle(2))
    assert policies.encodings == 2
    with pytest.raises(RequestPolicyTooLarge) as caught:
        RequestPolicies(limit_bytes=100).encoded(bundle(1))
    assert status_for(caught.value)[0] is grpc.StatusCode.FAILED_PRECONDITION


class FakeBundles:
    """A served bundle that tests set; waiters wake on every change."""

    def __init__(self) -> None:
        self.served_bundle: Bundle | None = None
        self._changed = asyncio.Condition()

    async def serve(self, served: Bundle) -> None:
        async with self._changed:
            self.served_bundle = served
            self._changed.notify_all()

    async def next_served_bundle(self, after_revision: int, /) -> Bundle:
        async with self._changed:
            await self._changed.wait_for(
                lambda: (
                    self.served_bundle is not None and self.served_bundle.revision != after_revision
                )
            )
            assert self.served_bundle is not None
            return self.served_bundle


@dataclass
class Rig:
    ca: LocalCertificateAuthority
    bundles: FakeBundles
    api: NodeApiServer

    def channel(self, node_id: str | None) -> grpc.aio.Channel:
        return node_api_channel(self.ca, self.api, TD, node_id)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    ca = LocalCertificateAuthority.create(CaConfig(TD))
    store = MemoryStore()
    bundles = FakeBundles()
    service = NodeRegistryService(store, TD, load_interval_s=0.05, bundles=bundles)
    api = await start_node_api(
        NodeIdentityService(ca, JoinTokens(store)),
        certificate=issue_server_certificate(ca, now=dt.datetime.now(dt.UTC)),
        bundle=ca.bundle(),
        registry=service,
    )
    try:
        yield Rig(ca, bundles, api)
    finally:
        await api.stop(grace=None)
        await store.aclose()


async def fetch(channel: grpc.aio.Channel) -> RequestPolicyBundle:
    method = channel.unary_unary(
        registry_method_path(REQUEST_POLICY_METHOD),
        request_serializer=lambda q: q.model_dump_json().encode(),
        response_deserializer=RequestPolicyBundle.model_validate_json,
    )
    answer: RequestPolicyBundle = await method(RequestPolicyQuery(), timeout=5)
    return answer


async def test_the_method_answers_not_found_then_the_served_policy(rig: Rig) -> None:
    async with rig.channel("edge-1") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fetch(channel)
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        await rig.bundles.serve(bundle(1))
        policy = await fetch(channel)
    assert policy.bundle.revision == 1
    assert "request/request.rego" in policy.modules


async def test_the_method_needs_a_node_svid(rig: Rig) -> None:
    await rig.bundles.serve(bundle(1))
    async with rig.channel(None) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fetch(channel)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_session_hears_of_each_new_bundle(rig: Rig) -> None:
    await rig.bundles.serve(bundle(1))
    async with rig.channel("edge-1") as channel:
        call = channel.stream_stream(
            registry_method_path(),
            request_serializer=lambda m: m.model_dump_json().encode(),
            response_deserializer=SessionReply.model_validate_json,
        )()  # type: ignore[call-arg]
        await call.write(
            SessionMessage(
                registration=NodeRegistration(
                    node_id="edge-1", tier="local", region="eu", app_port=18080
                )
            )
        )
        first = await call.read()
        assert isinstance(first, SessionReply)
        assert first.bundle == bundle_ref(bundle(1))
        await rig.bundles.serve(bundle(2))
        async with asyncio.timeout(5):
            announced = await call.read()
        assert isinstance(announced, SessionReply)
        assert announced.bundle == bundle_ref(bundle(2))
        assert announced.usage is None
        assert announced.node_id == "edge-1"
        await call.write(SessionMessage(goodbye=True))
        await call.done_writing()
        call.cancel()
