"""Streams are charged whether or not the client asked for usage, in a real Envoy with
the compiled config: the usage filter asks the backend for the usage chunk
(``stream_options.include_usage``), accounts it, and removes it from the client's
stream when the client had not asked; request bodies it cannot read pass untouched, and
their streams are charged an estimate (see test_every_answer_charged.py)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.budgets.backend import COMPLETION_TOKENS, PROMPT_TOKENS
from tests.integration.budgets.openai_backend import (
    SLOW_S,
    OpenAIBackend,
    StreamMesh,
    stream_events,
    stream_mesh,
)
from tiermesh.agents.usage import TenantUsage, estimate

pytestmark = pytest.mark.envoy

TOKENS = PROMPT_TOKENS + COMPLETION_TOKENS
COST_MICRO = 180_000
TENANT = "globex"
HEADERS = {
    "x-tiermesh-tenant": TENANT,
    "x-tiermesh-sensitivity": "public",
    "x-tiermesh-task": "reasoning",
}
ASK = {"include_usage": True}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamMesh]:
    with stream_mesh(tmp_path_factory.mktemp("streams")) as built:
        yield built


@pytest.fixture
def cloud(mesh: StreamMesh) -> OpenAIBackend:
    backend = mesh.backends["cloud"]
    backend.received.clear()
    return backend


def request(model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def charged(mesh: StreamMesh, before: TenantUsage) -> TenantUsage:
    """What the tenant was charged since ``before``: waits for one answer's tokens, then
    long enough for a second entry to show up if there were one."""
    mesh.wait_tokens(TENANT, before.tokens + TOKENS)
    time.sleep(0.3)
    after = mesh.agent.totals(TENANT)
    return TenantUsage(after.tokens - before.tokens, after.cost_micro - before.cost_micro)


def without_usage_event(events: list[bytes]) -> bytes:
    return b"".join(e for e in events if b'"choices": []' not in e)


@pytest.mark.parametrize("model", ["m", "split", "together"])
def test_a_stream_that_did_not_ask_is_charged_and_gets_no_usage_chunk(
    mesh: StreamMesh, cloud: OpenAIBackend, model: str
) -> None:
    before = mesh.agent.totals(TENANT)
    sent = request(model, stream=True)
    reply = mesh.send(HEADERS, encode(sent))
    assert (reply.status, reply.backend) == (200, "cloud")

    (received,) = cloud.received
    assert received.content_length == len(received.body)
    upstream = json.loads(received.body)
    assert upstream == sent | {"stream_options": ASK}
    # What the backend sent for the request it got, less the usage event.
    assert reply.body == without_usage_event(stream_events(upstream)).decode()
    assert '"choices": []' not in reply.body
    assert reply.body.endswith("data: [DONE]\n\n")
    assert charged(mesh, before) == TenantUsage(TOKENS, COST_MICRO)


def test_a_stream_that_asked_keeps_its_usage_chunk_and_is_charged_once(
    mesh: StreamMesh, cloud: OpenAIBackend
) -> None:
    before = mesh.agent.totals(TENANT)
    body = encode(request(stream=True, stream_options=ASK))
    reply = mesh.send(HEADERS, body)
    assert reply.status == 200
    assert [r.body for r in cloud.received] == [body]
    assert reply.body == b"".join(stream_events(json.loads(body))).decode()
    assert reply.body.count('"choices": []') == 1
    assert charged(mesh, before) == TenantUsage(TOKENS, COST_MICRO)


def test_include_usage_false_is_forced_on_and_the_chunk_removed(
    mesh: StreamMesh, cloud: OpenAIBackend
) -> None:
    before = mesh.agent.totals(TENANT)
    sent = request(stream=True, stream_options={"include_usage": False, "other": [1, "}"]})
    reply = mesh.send(HEADERS, encode(sent))
    assert reply.status == 200
    upstream = json.loads(cloud.received[0].body)
    assert upstream["stream_options"] == {"include_usage": True, "other": [1, "}"]}
    assert '"choices": []' not in reply.body
    assert charged(mesh, before) == TenantUsage(TOKENS, COST_MICRO)


def test_a_json_answer_is_unchanged_and_charged(mesh: StreamMesh, cloud: OpenAIBackend) -> None:
    before = mesh.agent.totals(TENANT)
    body = encode(request(stream=False))
    reply = mesh.send(HEADERS, body)
    assert reply.status == 200
    assert [r.body for r in cloud.received] == [body]
    assert json.loads(reply.body)["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert charged(mesh, before) == TenantUsage(TOKENS, COST_MICRO)


def test_a_sized_stream_keeps_its_usage_chunk(mesh: StreamMesh, cloud: OpenAIBackend) -> None:
    """An SSE answer with ``content-length`` cannot lose bytes: it passes whole."""
    before = mesh.agent.totals(TENANT)
    reply = mesh.send(HEADERS, encode(request("sized", stream=True)))
    assert reply.status == 200
    upstream = json.loads(cloud.received[0].body)
    assert reply.body == b"".join(stream_events(upstream)).decode()
    assert charged(mesh, before) == TenantUsage(TOKENS, COST_MICRO)


def test_the_stream_is_not_held_back(mesh: StreamMesh, cloud: OpenAIBackend) -> None:
    """The content arrives before the backend sends the (removed) usage event."""
    connection = http.client.HTTPConnection("127.0.0.1", mesh.listener, timeout=10)
    try:
        start = time.monotonic()
        connection.request(
            "POST",
            "/v1/chat/completions",
            body=encode(request("slow", stream=True)),
            headers={"content-type": "application/json", **HEADERS},
        )
        response = connection.getresponse()
        first = response.read1(65536)
        first_s = time.monotonic() - start
        rest = response.read()
        total_s = time.monotonic() - start
    finally:
        connection.close()
    assert b'"content": "Hello"' in first
    assert first_s < SLOW_S / 2 < SLOW_S <= total_s
    assert (first + rest).endswith(b"data: [DONE]\n\n")
    assert b'"choices": []' not in first + rest


TRICKY: list[tuple[str, bytes, dict[str, Any] | None]] = [
    # (case, body sent, the JSON the backend gets; None: the very same bytes)
    (
        "whitespace",
        b'\n {\t"model" :"m",\r\n "stream"  :\ttrue , "messages":[ ] }\n',
        {"model": "m", "stream": True, "messages": [], "stream_options": ASK},
    ),
    ("stream false", b'{"model":"m","stream":false,"messages":[]}', None),
    ("stream in a string", b'{"model":"m","messages":["\\"stream\\": true"]}', None),
    ("stream nested", b'{"model":"m","messages":[],"metadata":{"stream":true}}', None),
    ("stream as a string", b'{"model":"m","stream":"true"}', None),
    (
        "stream_options null",
        b'{"model":"m","stream":true,"stream_options":null}',
        {"model": "m", "stream": True, "stream_options": ASK},
    ),
    (
        "stream_options empty",
        b'{"model":"m","stream":true,"stream_options":{ }}',
        {"model": "m", "stream": True, "stream_options": ASK},
    ),
    (
        "escaped key",
        b'{"model":"m","\\u0073tream":true}',
        {"model": "m", "stream": True, "stream_options": ASK},
    ),
    (
        "multibyte content",
        '{"model":"m","messages":["héllo ✓ \\u00e9"],"stream":true}'.encode(),
        {"model": "m", "messages": ["héllo ✓ é"], "stream": True, "stream_options": ASK},
    ),
    ("not json", b"stream=true&model=m", None),
    ("an array", b'[{"stream":true}]', None),
]
UNPARSED = [
    # look like JSON but do not parse: a lenient upstream parser might still read them, so
    # the request policy keeps them off the cloud (restricted); the filter leaves them be
    ("cut json", b'{"model":"m","stream":true'),
    ("two objects", b'{"stream":true}{"stream":true}'),
]


@pytest.mark.parametrize(("body", "expected"), [t[1:] for t in TRICKY], ids=[t[0] for t in TRICKY])
def test_request_bodies_the_filter_reads(
    mesh: StreamMesh, cloud: OpenAIBackend, body: bytes, expected: dict[str, Any] | None
) -> None:
    reply = mesh.send(HEADERS, body)
    assert reply.status == 200, reply.body
    (received,) = cloud.received
    assert received.content_length == len(received.body)
    if expected is None:
        assert received.body == body
    else:
        assert json.loads(received.body) == expected


@pytest.mark.parametrize("body", [t[1] for t in UNPARSED], ids=[t[0] for t in UNPARSED])
def test_bodies_that_do_not_parse_stay_off_the_cloud_and_untouched(
    mesh: StreamMesh, cloud: OpenAIBackend, body: bytes
) -> None:
    kept = [mesh.backends[name] for name in ("edge", "gpu")]
    for backend in kept:
        backend.received.clear()
    reply = mesh.send(HEADERS, body)
    assert reply.status == 200, reply.body
    assert cloud.received == []
    (received,) = [request for backend in kept for request in backend.received]
    assert received.body == body


SMALL_BOUND = 1024


@pytest.fixture(scope="module")
def bounded_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamMesh]:
    """A mesh whose ext_authz, and so its usage filter, reads request bodies of at most
    :data:`SMALL_BOUND` bytes (the default bound is more than the request policy's token
    limit lets pass)."""
    with stream_mesh(tmp_path_factory.mktemp("bounded"), max_body_bytes=SMALL_BOUND) as built:
        yield built


def test_a_body_over_the_bound_passes_untouched(bounded_mesh: StreamMesh) -> None:
    at_bound = request(stream=True, padding="")
    at_bound["padding"] = "x" * (SMALL_BOUND - len(encode(at_bound)))
    over = at_bound | {"padding": at_bound["padding"] + "x"}
    received = []
    before = bounded_mesh.agent.totals(TENANT)
    for sent in (at_bound, over):
        reply = bounded_mesh.send(HEADERS, encode(sent))
        assert reply.status == 200, reply.body
        # ext_authz saw only part of the longer body, so it was routed as restricted.
        (got,) = [r for b in bounded_mesh.backends.values() for r in b.received
                  if r not in received]  # fmt: skip
        received.append(got)
    assert [len(r.body) for r in received] == [
        SMALL_BOUND + len(b'"stream_options":{"include_usage":true},'),
        SMALL_BOUND + 1,
    ]
    assert json.loads(received[0].body)["stream_options"] == ASK
    assert received[1].body == encode(over)
    # The documented bound: that stream carries no usage, and is charged an estimate.
    assert '"choices": []' not in reply.body
    prompt, completion = estimate(len(encode(over)), len(reply.body.encode()))
    deadline = time.monotonic() + 10
    while bounded_mesh.agent.totals(TENANT).estimated_tokens < before.estimated_tokens + 1:
        assert time.monotonic() < deadline, bounded_mesh.agent.totals(TENANT)
        time.sleep(0.05)
    time.sleep(0.3)
    after = bounded_mesh.agent.totals(TENANT)
    assert after.estimated_tokens - before.estimated_tokens == prompt + completion
    assert after.tokens - before.tokens == TOKENS + prompt + completion
