"""The node registry over real mTLS gRPC and a real etcd: a registration lives exactly as
long as its session, and a node can claim nothing but itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import grpc
import pytest

from tests.integration.controlplane.conftest import (
    LEASE_TTL_S,
    LOAD_INTERVAL_S,
    Call,
    Registry,
    open_session,
)
from tiermesh.controlplane.api import (
    MAX_SESSION_MESSAGE_BYTES,
    NodeLoad,
    NodeRegistration,
    RegisteredNode,
    SessionMessage,
    SessionReply,
)
from tiermesh.controlplane.reconciler import NODES_PREFIX, node_from_registration
from tiermesh.controlplane.store import EventKind

pytestmark = pytest.mark.etcd
NODE = "edge-1"


def registration(node_id: str = NODE, *endpoints: str, app_port: int = 18080) -> SessionMessage:
    return SessionMessage(
        registration=NodeRegistration(
            node_id=node_id,
            tier="local",
            region="eu-west",
            residency=("eu",),
            app_port=app_port,
            endpoints=tuple(
                {"name": name, "host": "127.0.0.1", "port": 9000 + i}
                for i, name in enumerate(endpoints or (f"{node_id}.llama",))
            ),
            labels={"hardware": "rpi5"},
        )
    )


async def stored(registry: Registry) -> dict[str, RegisteredNode]:
    return {
        record.node_id: RegisteredNode.model_validate_json(record.registration)
        for record in await registry.store.list_nodes()
    }


async def until_gone(registry: Registry, node_id: str, limit_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if node_id not in await stored(registry):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{node_id} still registered after {limit_s} s")


async def refused(call: Call) -> tuple[grpc.StatusCode, str]:
    """The status that ends ``call``; replies before it (an accepted registration) are read."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all(call)
    return info.value.code(), info.value.details() or ""


async def read_all(call: Call) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


async def next_reply(call: Call) -> SessionReply:
    reply = await call.read()
    assert isinstance(reply, SessionReply)
    return reply


async def test_register_then_close_deletes_the_registration(registry: Registry) -> None:
    async with registry.channel(NODE) as channel:
        call = open_session(channel)
        await call.write(registration())
        reply = await next_reply(call)
        assert reply.node_id == NODE
        assert reply.spiffe_id == f"spiffe://mesh.example/node/{NODE}"
        assert reply.lease_ttl_s == LEASE_TTL_S

        (record,) = await registry.store.list_nodes()
        assert record.node_id == NODE
        assert record.lease_id != 0
        document = RegisteredNode.model_validate_json(record.registration)
        assert document.spiffe_id == reply.spiffe_id
        assert document.app_port == 18080
        assert document.load is None
        node = node_from_registration(record)
        assert (node.id, node.tier, node.region, node.residency) == (
            NODE,
            "local",
            "eu-west",
            ("eu",),
        )

        # The lease is refreshed while the stream lives: it outlives its TTL.
        await asyncio.sleep(LEASE_TTL_S + 1)
        assert NODE in await stored(registry)

        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        assert await until_gone(registry, NODE, 1.0) < 1.0


async def test_goodbye_deletes_the_registration_at_once(registry: Registry) -> None:
    async with registry.channel(NODE) as channel:
        call = open_session(channel)
        await call.write(registration())
        await call.read()
        await call.write(SessionMessage(goodbye=True))
        assert await call.code() == grpc.StatusCode.OK
        assert await until_gone(registry, NODE, 1.0) < 1.0


async def test_a_vanished_client_expires_within_the_ttl(registry: Registry) -> None:
    channel = registry.channel(NODE)
    call = open_session(channel)
    await call.write(registration())
    await call.read()
    started = time.monotonic()
    await channel.close()  # no goodbye, no half-close: the connection just goes
    await asyncio.sleep(0.3)
    assert NODE in await stored(registry), "a lost session must not delete at once"
    await until_gone(registry, NODE, LEASE_TTL_S + 2.0)
    assert time.monotonic() - started <= LEASE_TTL_S + 2.0


async def test_reregistering_updates_under_the_same_lease(registry: Registry) -> None:
    async with registry.channel(NODE) as channel:
        call = open_session(channel)
        await call.write(registration())
        first = await next_reply(call)
        (before,) = await registry.store.list_nodes()
        await call.write(registration(NODE, f"{NODE}.vllm", NODE, app_port=18081))
        second = await next_reply(call)
        assert second.revision > first.revision
        (after,) = await registry.store.list_nodes()
        assert after.lease_id == before.lease_id
        document = RegisteredNode.model_validate_json(after.registration)
        assert document.app_port == 18081
        assert [e.name for e in document.endpoints] == [f"{NODE}.vllm", NODE]
        await call.done_writing()


@pytest.mark.parametrize(
    ("message", "claim"),
    [
        (registration("edge-2"), "node id 'edge-2'"),
        (registration(NODE, f"{NODE}.llama", "edge-2.llama"), "edge-2.llama"),
        (registration(NODE, "edge-10"), "edge-10"),
    ],
    ids=["another-node-id", "another-nodes-endpoint", "prefix-is-not-ownership"],
)
async def test_claims_beyond_the_svid_are_refused(
    registry: Registry, message: SessionMessage, claim: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with registry.channel(NODE) as channel:
        call = open_session(channel)
        await call.write(message)
        code, details = await refused(call)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert claim in details
    assert await registry.store.list_nodes() == ()
    assert any("PERMISSION_DENIED" in r.getMessage() for r in caplog.records)


async def test_a_second_registration_for_another_id_ends_the_session(registry: Registry) -> None:
    async with registry.channel(NODE) as channel:
        call = open_session(channel)
        await call.write(registration())
        await call.read()
        await call.write(registration("edge-2"))
        code, details = await refused(call)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "edge-2" in details
    assert await stored(registry) == {}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff not json", grpc.StatusCode.INVALID_ARGUMENT),
        (b"{}", grpc.StatusCode.INVALID_ARGUMENT),
        (
            SessionMessage(load=NodeLoad()).model_dump_json().encode(),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (b"x" * (MAX_SESSION_MESSAGE_BYTES + 1), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    ids=["garbage", "empty-message", "load-before-registration", "oversized"],
)
async def test_bad_first_messages_write_nothing(
    registry: Registry, payload: bytes, code: grpc.StatusCode
) -> None:
    async with registry.channel(NODE) as channel:
        method = channel.stream_stream(
            "/tiermesh.node.v1.NodeRegistry/Session",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        call = method()
        await call.write(payload)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == code
    assert await registry.store.list_nodes() == ()


async def test_the_join_port_has_no_svid_to_register_with(registry: Registry) -> None:
    async with registry.channel(None) as channel:
        call = open_session(channel)
        # The server may refuse the stream before the write lands; the status tells.
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.write(registration())
        code, _ = await refused(call)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert await registry.store.list_nodes() == ()


async def test_load_writes_are_rate_limited_and_keep_the_newest(registry: Registry) -> None:
    async with registry.channel(NODE) as channel:
        call = open_session(channel)
        await call.write(registration())
        reply = await next_reply(call)
        assert reply.load_interval_s == LOAD_INTERVAL_S
        after = (await registry.store.read_prefix(NODES_PREFIX)).revision
        puts = 0

        async def count() -> None:
            nonlocal puts
            async with registry.store.watch(NODES_PREFIX, after_revision=after) as events:
                async for event in events:
                    puts += event.kind is EventKind.PUT

        counter = asyncio.create_task(count())
        reports = 40
        window_s = 1.2
        for i in range(reports):
            load = NodeLoad(in_flight=i, queue_depth=i // 2, tokens_per_s=10.0 + i, healthy=True)
            await call.write(SessionMessage(load=load))
            await asyncio.sleep(window_s / reports)
        await asyncio.sleep(LOAD_INTERVAL_S + 0.3)  # the trailing write lands
        counter.cancel()
        # One write per interval at most: ~window / interval, plus the leading one.
        assert 2 <= puts <= int((window_s + LOAD_INTERVAL_S + 0.3) / LOAD_INTERVAL_S) + 1, puts
        document = (await stored(registry))[NODE]
        assert document.load is not None
        assert document.load.in_flight == reports - 1
        assert document.load_at is not None
        assert json.loads(document.model_dump_json())["load"]["tokens_per_s"] == 10.0 + reports - 1
        await call.done_writing()


async def test_an_older_agents_cascade_token_is_not_stored(registry: Registry) -> None:
    """Agents once registered their cascade handler's secret; the control plane still
    accepts such a registration but keeps the secret out of etcd."""
    secret = "older-agent-secret-0123456789abcdef"
    message = registration()
    assert message.registration is not None
    legacy = message.registration.model_copy(update={"cascade_token": secret, "cascade_port": 9})
    async with registry.channel(NODE) as channel:
        call = open_session(channel)
        await call.write(SessionMessage(registration=legacy))
        await next_reply(call)
        (record,) = await registry.store.list_nodes()
        assert secret.encode() not in record.registration
        assert RegisteredNode.model_validate_json(record.registration).cascade_port == 9
        await call.write(SessionMessage(goodbye=True))
        await read_all(call)
