"""Tenant API keys on the node API: the watcher following ``apikeys/``, the digests in the
request policy, and a key change announced on registry sessions like a bundle change."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from tests.support.svids import node_api_channel
from tests.unit.nodeapi.test_request_policy import FakeBundles, bundle, fetch
from tiermesh.controlplane.api import (
    ApiKeyEntry,
    NodeRegistration,
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
)
from tiermesh.controlplane.nodeapi.keys import NO_KEYS, KeyWatcher, ServedKeys, announced_ref
from tiermesh.controlplane.nodeapi.policy import RequestPolicies, bundle_ref, request_policy_of
from tiermesh.controlplane.store import ApiKeyRecord, MemoryStore

TD = "mesh.example"
ACME = ApiKeyRecord("0123456789abcdef", "acme", "ab" * 32, "2026-01-01T00:00:00+00:00")
GLOBEX = ApiKeyRecord("fedcba9876543210", "globex", "cd" * 32, "2026-01-01T00:00:00+00:00")


async def test_the_watcher_serves_stored_keys_and_follows_changes() -> None:
    store = MemoryStore()
    created = await store.create_api_key(ACME)
    watcher = KeyWatcher(store)
    await watcher.start()
    try:
        first = watcher.served_keys
        assert first.revision == created.mod_revision
        assert first.entries == (ApiKeyEntry(id=ACME.key_id, tenant="acme", sha256="ab" * 32),)

        await store.create_api_key(GLOBEX)
        async with asyncio.timeout(5):
            second = await watcher.next_served_keys(first.revision)
        assert [e.tenant for e in second.entries] == ["acme", "globex"]

        revoked = await store.revoke_api_key(ACME.key_id, "2026-02-01T00:00:00+00:00")
        async with asyncio.timeout(5):
            third = await watcher.next_served_keys(second.revision)
        assert third.revision == revoked.mod_revision
        assert [(e.id, e.revoked) for e in third.entries] == [
            (ACME.key_id, True),
            (GLOBEX.key_id, False),
        ]
    finally:
        await watcher.aclose()
        await store.aclose()


async def test_a_store_without_keys_serves_none() -> None:
    store = MemoryStore()
    watcher = KeyWatcher(store)
    await watcher.start()
    assert watcher.served_keys == NO_KEYS
    await watcher.aclose()


def test_without_keys_the_policy_leaves_the_field_out_for_older_nodes() -> None:
    served = bundle(1)
    policy = request_policy_of(served)
    assert policy.api_keys is None
    assert policy.bundle == bundle_ref(served)
    assert "api_keys" not in json.loads(RequestPolicies().encoded(served))


def test_keys_travel_as_digests_and_move_the_announced_revision() -> None:
    served = bundle(1)  # etcd revision 41
    entry = ApiKeyEntry(id=ACME.key_id, tenant="acme", sha256="ab" * 32, revoked=True)
    later = ServedKeys(90, (entry,))
    policy = request_policy_of(served, later)
    assert policy.api_keys == (entry,)
    assert policy.bundle == announced_ref(served, later)
    assert policy.bundle.etcd_revision == 90
    assert request_policy_of(served, ServedKeys(5, (entry,))).bundle.etcd_revision == 41

    policies = RequestPolicies()
    encoded = json.loads(policies.encoded(served, later))
    assert encoded["api_keys"] == [entry.model_dump(mode="json")]
    assert ACME.sha256 in policies.encoded(served, later).decode()
    policies.encoded(served, ServedKeys(91, (entry,)))
    assert policies.encodings == 2


@dataclass
class Rig:
    ca: LocalCertificateAuthority
    store: MemoryStore
    bundles: FakeBundles
    api: NodeApiServer
    watcher: KeyWatcher

    def channel(self, node_id: str | None) -> grpc.aio.Channel:
        return node_api_channel(self.ca, self.api, TD, node_id)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    ca = LocalCertificateAuthority.create(CaConfig(TD))
    store = MemoryStore()
    bundles = FakeBundles()
    watcher = KeyWatcher(store)
    await watcher.start()
    service = NodeRegistryService(store, TD, load_interval_s=0.05, bundles=bundles, keys=watcher)
    api = await start_node_api(
        NodeIdentityService(ca, JoinTokens(store)),
        certificate=issue_server_certificate(ca, now=dt.datetime.now(dt.UTC)),
        bundle=ca.bundle(),
        registry=service,
    )
    try:
        yield Rig(ca, store, bundles, api, watcher)
    finally:
        await api.stop(grace=None)
        await watcher.aclose()
        await store.aclose()


async def test_a_revocation_is_announced_and_fetched_without_a_new_bundle(rig: Rig) -> None:
    # As the reconciler would have read it from this store: before the keys were written.
    await rig.bundles.serve(dataclasses.replace(bundle(1), etcd_revision=rig.store.revision))
    created = await rig.store.create_api_key(ACME)
    async with asyncio.timeout(5):
        await rig.watcher.next_served_keys(0)
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
        assert first.bundle is not None
        assert first.bundle.etcd_revision == created.mod_revision
        before = await fetch(channel)
        assert before.bundle == first.bundle
        assert before.api_keys is not None
        assert [k.revoked for k in before.api_keys] == [False]

        revoked = await rig.store.revoke_api_key(ACME.key_id, "2026-02-01T00:00:00+00:00")
        async with asyncio.timeout(5):
            announced = await call.read()
        assert isinstance(announced, SessionReply)
        assert announced.bundle is not None
        assert announced.bundle.revision == 1
        assert announced.bundle.etcd_revision == revoked.mod_revision
        after = await fetch(channel)
        assert after.bundle == announced.bundle
        assert after.api_keys is not None
        assert [k.revoked for k in after.api_keys] == [True]

        await call.write(SessionMessage(goodbye=True))
        await call.done_writing()
        call.cancel()


async def test_the_watcher_recovers_from_a_lost_store() -> None:
    store = MemoryStore()
    watcher = KeyWatcher(store)
    await watcher.start()
    try:
        store.set_unavailable()
        await asyncio.sleep(0.05)  # the watch breaks
        store.set_unavailable(False)
        created = await store.create_api_key(ACME)
        async with asyncio.timeout(5):
            served = await watcher.next_served_keys(0)
        assert [e.id for e in served.entries] == [ACME.key_id]
        assert served.revision >= created.mod_revision
    finally:
        await watcher.aclose()
        await store.aclose()
