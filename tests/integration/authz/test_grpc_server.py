"""The Check service over real gRPC with a scripted client: odd bodies, missing headers,
oversized messages, and a sink that fails."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2

from tiermesh.agents.authz import (
    DECISION_ID_HEADER,
    Authorizer,
    BudgetState,
    MemorySink,
    StaticBudgetSource,
    load_request_policy,
    max_message_bytes,
    start_authz_server,
)
from tiermesh.agents.decisionlog import DecisionEntry
from tiermesh.rego import RegorusEngine

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies" / "request"
MAX_BODY = 8 * 1024


@dataclass
class Served:
    stub: external_auth_pb2_grpc.AuthorizationStub
    sink: MemorySink


class _FlakySink(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    async def record(self, entry: DecisionEntry) -> None:
        if self.fail:
            raise OSError("disk gone")
        await super().record(entry)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    engine = RegorusEngine()
    load_request_policy(engine, POLICY_DIR)
    sink = _FlakySink()
    budget = StaticBudgetSource({"acme": BudgetState.of(1, 100), "broke": BudgetState.of(9, 5)})
    server, port = await start_authz_server(
        Authorizer(engine, sink, budget, max_body_bytes=MAX_BODY)
    )
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    try:
        yield Served(external_auth_pb2_grpc.AuthorizationStub(channel), sink)
    finally:
        await channel.close()
        await server.stop(None)
        engine.close()


def request(
    body: bytes = b"", headers: dict[str, str] | None = None, *, raw: bool = True
) -> external_auth_pb2.CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="POST", path="/v1/chat/completions", headers=headers or {}
    )
    if raw:
        http.raw_body = body
    else:
        http.body = body.decode("utf-8", "replace")
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )


ACME_PUBLIC = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}


def set_headers(response: external_auth_pb2.CheckResponse) -> dict[str, str]:
    return {o.header.key: o.header.value for o in response.ok_response.headers}


async def test_a_clean_body_is_allowed_with_its_label(served: Served) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "hello"}]}).encode()
    response = await served.stub.Check(request(body, ACME_PUBLIC), timeout=5)
    assert response.status.code == code_pb2.OK
    headers = set_headers(response)
    assert headers["x-tiermesh-sensitivity"] == "public"
    assert list(response.ok_response.headers_to_remove) == ["x-tiermesh-budget"]
    (added,) = response.ok_response.response_headers_to_add
    assert (added.header.key, added.header.value) == (
        DECISION_ID_HEADER,
        headers[DECISION_ID_HEADER],
    )
    assert str(served.sink.entries[0].decision_id) == added.header.value


@pytest.mark.parametrize(
    ("body", "raw", "sensitivity"),
    [
        (b"\x00\x01\x02\x03" * 100 + b"4111 1111 1111 1111", True, "restricted"),
        (b"\xff\xfe\xfd invalid utf-8 a@example.com", True, "restricted"),
        (b"\xff\xfe\xfd invalid utf-8 a@example.com", False, "restricted"),
        (
            b'{"messages": [{"content": "unterminated',
            True,
            "restricted",
        ),  # looks like JSON, does not parse
        (b'{"messages": [{"content": "unterminated a@example.com', True, "restricted"),
        (os.urandom(MAX_BODY), True, "restricted"),
        (b"x" * (MAX_BODY * 4), True, "restricted"),
    ],
)
async def test_odd_bodies_never_crash_and_uninspectable_ones_are_restricted(
    served: Served, body: bytes, raw: bool, sensitivity: str
) -> None:
    response = await served.stub.Check(request(body, ACME_PUBLIC, raw=raw), timeout=5)
    assert response.status.code == code_pb2.OK
    assert set_headers(response)["x-tiermesh-sensitivity"] == sensitivity


async def test_missing_headers_get_a_403_with_a_reason(served: Served) -> None:
    response = await served.stub.Check(request(b"hello"), timeout=5)
    assert response.status.code == code_pb2.PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 403
    assert json.loads(denied.body)["reason"].startswith("no tenant")
    assert DECISION_ID_HEADER in {o.header.key for o in denied.headers}


async def test_an_empty_check_request_is_denied(served: Served) -> None:
    response = await served.stub.Check(external_auth_pb2.CheckRequest(), timeout=5)
    assert response.denied_response.status.code == 403


async def test_an_oversized_message_is_refused_and_the_server_lives_on(served: Served) -> None:
    huge = b"a" * (max_message_bytes(MAX_BODY) + 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.Check(request(huge, ACME_PUBLIC), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    response = await served.stub.Check(request(b"{}", ACME_PUBLIC), timeout=5)
    assert response.status.code == code_pb2.OK


async def test_a_failing_sink_fails_the_rpc(served: Served) -> None:
    assert isinstance(served.sink, _FlakySink)
    served.sink.fail = True
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.Check(request(b"{}", ACME_PUBLIC), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    served.sink.fail = False
    assert (await served.stub.Check(request(b"{}", ACME_PUBLIC), timeout=5)).status.code == 0


async def test_a_spent_budget_and_garbage_headers(served: Served) -> None:
    headers = {"x-tiermesh-tenant": "broke", "x-tiermesh-sensitivity": "\x7f??", "x-other": ""}
    response = await served.stub.Check(request(b"{}", headers), timeout=5)
    assert set_headers(response)["x-tiermesh-budget"] == "exhausted"
    assert set_headers(response)["x-tiermesh-sensitivity"] == "restricted"
