"""Join tokens on the in-memory store and on a real etcd: once, hashed, expiring."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from tiermesh.controlplane.identity import InvalidNodeIdError
from tiermesh.controlplane.identity.tokens import (
    TOKEN_PREFIX,
    JoinTokens,
    MalformedToken,
    TokenExpired,
    TokenReusedOrUnknown,
    token_key,
)
from tiermesh.controlplane.store import Store

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(minutes=10)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(store: Store, clock: Clock) -> JoinTokens:
    return JoinTokens(store, clock=clock)


async def test_a_token_is_consumed_exactly_once(tokens: JoinTokens) -> None:
    token = await tokens.create("edge-1", TTL)
    assert len(token) == 43
    assert await tokens.peek(token) == "edge-1"
    assert await tokens.consume(token) == "edge-1"
    with pytest.raises(TokenReusedOrUnknown):
        await tokens.consume(token)
    with pytest.raises(TokenReusedOrUnknown):
        await tokens.peek(token)


async def test_concurrent_consumers_have_one_winner(tokens: JoinTokens) -> None:
    token = await tokens.create("edge-1", TTL)
    results = await asyncio.gather(
        *(tokens.consume(token) for _ in range(8)), return_exceptions=True
    )
    assert results.count("edge-1") == 1
    assert all(isinstance(r, TokenReusedOrUnknown) for r in results if r != "edge-1")


async def test_an_expired_token_is_refused_and_deleted(
    tokens: JoinTokens, store: Store, clock: Clock
) -> None:
    token = await tokens.create("edge-1", TTL)
    clock.now += TTL
    with pytest.raises(TokenExpired) as info:
        await tokens.consume(token)
    assert info.value.node_id == "edge-1"
    assert await store.get(token_key(token)) is None
    with pytest.raises(TokenReusedOrUnknown):
        await tokens.consume(token)


@pytest.mark.parametrize("candidate", ["A" * 43, "short", "has space " * 5, "é" * 43, "x" * 129])
async def test_unknown_or_malformed_tokens_are_refused(tokens: JoinTokens, candidate: str) -> None:
    with pytest.raises((TokenReusedOrUnknown, MalformedToken)):
        await tokens.consume(candidate)


async def test_the_store_holds_only_the_hash(tokens: JoinTokens, store: Store) -> None:
    token = await tokens.create("edge-1", TTL)
    snapshot = await store.read_prefix(TOKEN_PREFIX)
    assert len(snapshot.entries) == 1
    entry = snapshot.entries[0]
    assert token not in entry.key
    assert token.encode() not in entry.value
    assert entry.key == token_key(token)
    assert len(entry.key) == len(TOKEN_PREFIX) + 64


async def test_a_record_not_written_by_tokens_grants_nothing(
    tokens: JoinTokens, store: Store
) -> None:
    await store.put(token_key("B" * 43), b"not json")
    with pytest.raises(TokenReusedOrUnknown):
        await tokens.consume("B" * 43)


async def test_purge_removes_only_expired_records(tokens: JoinTokens, clock: Clock) -> None:
    short = await tokens.create("edge-1", dt.timedelta(minutes=1))
    long = await tokens.create("edge-2", TTL)
    clock.now += dt.timedelta(minutes=2)
    assert await tokens.purge_expired() == 1
    with pytest.raises(TokenReusedOrUnknown):
        await tokens.consume(short)
    assert await tokens.consume(long) == "edge-2"


async def test_create_checks_its_arguments(tokens: JoinTokens) -> None:
    with pytest.raises(InvalidNodeIdError):
        await tokens.create("Edge_1", TTL)
    for ttl in (dt.timedelta(0), dt.timedelta(days=8)):
        with pytest.raises(ValueError, match="TTL"):
            await tokens.create("edge-1", ttl)
