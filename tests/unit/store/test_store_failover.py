"""The failover rules of `MemberPool`, driven by scripted failures (no etcd process)."""

from __future__ import annotations

import time
from typing import Any

import aetcd
import pytest

from tiermesh.controlplane.store import StoreRequestFailed, StoreUnavailable
from tiermesh.controlplane.store.failover import MemberPool, Retry, classify, parse_endpoints

ENDPOINTS = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("127.0.0.1:2379", ("127.0.0.1:2379",)),
        ("http://a:1, b:2,c:3", ("a:1", "b:2", "c:3")),
        (["a:1", "b:2,c:3"], ("a:1", "b:2", "c:3")),
    ],
)
def test_endpoints_come_as_one_a_comma_list_or_a_sequence(
    given: str | list[str], parsed: tuple[str, ...]
) -> None:
    assert parse_endpoints(given) == parsed


@pytest.mark.parametrize(
    ("given", "problem"),
    [("a:1,,b:2", "host:port"), ("a:1,a:01", "given twice"), ([], "at least one")],
)
def test_bad_endpoint_lists_name_the_problem(given: str | list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_endpoints(given)


@pytest.mark.parametrize(
    ("error", "unsent"),
    [
        (aetcd.ConnectionFailedError("failed to connect to all addresses"), True),
        (aetcd.ClientError("etcdserver: no leader"), True),
        (aetcd.ConnectionFailedError("Socket closed"), False),
        (aetcd.ConnectionTimeoutError("Deadline Exceeded"), False),
        (aetcd.ClientError("etcdserver: request timed out"), False),
        (TimeoutError(), False),
    ],
)
def test_member_failures_say_whether_the_request_left(error: Exception, unsent: bool) -> None:
    failure = classify(error)
    assert failure is not None
    assert failure.unsent is unsent


@pytest.mark.parametrize(
    "error",
    [
        aetcd.RevisionCompactedError(7),
        aetcd.PreconditionFailedError("etcdserver: requested lease not found"),
        aetcd.InvalidArgumentError("etcdserver: too many operations in txn request"),
    ],
)
def test_the_requests_own_errors_are_not_member_failures(error: Exception) -> None:
    assert classify(error) is None


class Script:
    """An attempt that fails on the members listed, with the error given, and records calls."""

    def __init__(self, pool: MemberPool, failing: dict[int, Exception]) -> None:
        self.pool = pool
        self.failing = failing
        self.members: list[int] = []

    async def __call__(self, client: Any) -> str:
        index = self.pool.index_of(client)
        self.members.append(index)
        if index in self.failing:
            raise self.failing[index]
        return f"served by {index}"


async def test_a_read_moves_on_until_a_member_serves_it() -> None:
    pool = MemberPool(ENDPOINTS, timeout_s=5, attempt_timeout_s=1)
    script = Script(
        pool, {0: aetcd.ConnectionTimeoutError("x"), 1: aetcd.ClientError("etcdserver: no leader")}
    )
    assert await pool.call("get", script, retry=Retry.ALWAYS) == "served by 2"
    assert script.members == [0, 1, 2]
    assert pool.endpoint == ENDPOINTS[2]
    await pool.aclose()


async def test_a_write_whose_outcome_is_unknown_is_not_repeated() -> None:
    pool = MemberPool(ENDPOINTS, timeout_s=5, attempt_timeout_s=1)
    script = Script(pool, {0: aetcd.ConnectionTimeoutError("Deadline Exceeded")})
    with pytest.raises(StoreUnavailable, match="outcome unknown") as caught:
        await pool.call("put", script, retry=Retry.IF_UNSENT)
    assert script.members == [0]
    assert caught.value.endpoint == ",".join(ENDPOINTS)
    assert pool.endpoint == ENDPOINTS[1]  # the next call goes elsewhere
    await pool.aclose()


async def test_a_write_that_never_left_is_repeated_on_another_member() -> None:
    pool = MemberPool(ENDPOINTS, timeout_s=5, attempt_timeout_s=1)
    script = Script(pool, {0: aetcd.ConnectionFailedError("failed to connect to all addresses")})
    assert await pool.call("put", script, retry=Retry.IF_UNSENT) == "served by 1"
    await pool.aclose()


async def test_when_no_member_serves_the_error_names_each_and_the_deadline_holds() -> None:
    pool = MemberPool(ENDPOINTS, timeout_s=1.0, attempt_timeout_s=0.5)
    refused = aetcd.ConnectionFailedError("failed to connect to all addresses")
    script = Script(pool, dict.fromkeys(range(3), refused))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await pool.call("get", script, retry=Retry.ALWAYS)
    assert time.monotonic() - started < 1.5
    assert len(script.members) <= 9  # three rounds at most
    for endpoint in ENDPOINTS:
        assert f"{endpoint}: failed to connect" in str(caught.value)
    await pool.aclose()


async def test_the_requests_own_error_is_not_retried() -> None:
    pool = MemberPool(ENDPOINTS, timeout_s=5, attempt_timeout_s=1)
    script = Script(pool, {0: aetcd.InvalidArgumentError("too many operations")})
    with pytest.raises(StoreRequestFailed, match="too many operations"):
        await pool.call("txn", script, retry=Retry.ALWAYS)
    assert script.members == [0]
    await pool.aclose()


async def test_a_closed_pool_refuses_calls() -> None:
    pool = MemberPool(ENDPOINTS, timeout_s=5, attempt_timeout_s=1)
    await pool.aclose()
    with pytest.raises(StoreUnavailable, match="closed"):
        await pool.call("get", Script(pool, {}), retry=Retry.ALWAYS)
