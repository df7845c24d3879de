"""Every answer a backend gives is charged, in a real Envoy with the compiled config: an
upload without ``content-length`` (HTTP/1.1 chunked, HTTP/2) that the usage filter cannot
ask for usage, an answer without usage although asked, and a stream cut before its usage
chunk are charged an estimate (request and answer body bytes over
:data:`~tiermesh.agents.usage.server.CHARS_PER_TOKEN`); a tenant that streams past its
budget is then moved to its budget fallback, never answered 429."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.budgets.conftest import TINY_BUDGET
from tests.integration.budgets.openai_backend import OpenAIBackend, StreamMesh, stream_mesh
from tiermesh.agents.usage import TenantUsage, estimate

pytestmark = pytest.mark.envoy

PATH = "/v1/chat/completions"
PRICE_MICRO = (1000, 2000)
"""The cloud tier's micro-dollars per prompt and per completion token."""


def public(tenant: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-tiermesh-tenant": tenant,
        "x-tiermesh-sensitivity": "public",
        "x-tiermesh-task": "reasoning",
    }


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamMesh]:
    with stream_mesh(tmp_path_factory.mktemp("charged")) as built:
        yield built


@pytest.fixture
def cloud(mesh: StreamMesh) -> OpenAIBackend:
    backend = mesh.backends["cloud"]
    backend.received.clear()
    return backend


def stream_body(model: str = "m", **extra: Any) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    return json.dumps(body | extra).encode()


def post_chunked(
    listener: int, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` over HTTP/1.1 in two chunks (``transfer-encoding: chunked``, no
    ``content-length``); the status, headers and as much of the body as came."""
    connection = http.client.HTTPConnection("127.0.0.1", listener, timeout=10)
    try:
        half = len(body) // 2
        connection.request("POST", PATH, body=iter([body[:half], body[half:]]), headers=headers)
        response = connection.getresponse()
        answer = {name.lower(): value for name, value in response.getheaders()}
        try:
            got = response.read()
        except http.client.IncompleteRead as exc:
            got = exc.partial
        return response.status, answer, got
    finally:
        connection.close()


def post_http2(
    listener: int, headers: dict[str, str], body: bytes, scratch: Path
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` over HTTP/2 (h2c, prior knowledge) without ``content-length``: curl
    uploads stdin of unknown size."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    head, out = scratch / "headers", scratch / "body"
    command = [curl, "--silent", "--show-error", "--http2-prior-knowledge", "-X", "POST"]
    command += ["-T", "-", "--max-time", "10", "--dump-header", str(head), "--output", str(out)]
    command += [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    command.append(f"http://127.0.0.1:{listener}{PATH}")
    done = subprocess.run(command, input=body, capture_output=True, timeout=15, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = head.read_text().splitlines()
    assert lines[0].startswith("HTTP/2 "), lines
    answer = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if ":" in line)
    }
    return int(lines[0].split()[1]), answer, out.read_bytes()


def charged_estimate(
    mesh: StreamMesh, tenant: str, before: TenantUsage, tokens: int, timeout_s: float = 10
) -> TenantUsage:
    """What ``tenant`` was charged since ``before``, once at least ``tokens`` estimated
    tokens arrived (and a moment more, for a second entry if there were one)."""
    deadline = time.monotonic() + timeout_s
    while mesh.agent.totals(tenant).estimated_tokens < before.estimated_tokens + tokens:
        if time.monotonic() > deadline:
            raise AssertionError(f"{tenant}: {mesh.agent.totals(tenant)} after {timeout_s} s")
        time.sleep(0.05)
    time.sleep(0.3)
    after = mesh.agent.totals(tenant)
    return TenantUsage(
        after.tokens - before.tokens,
        after.cost_micro - before.cost_micro,
        after.estimated_tokens - before.estimated_tokens,
        after.estimated_cost_micro - before.estimated_cost_micro,
    )


def estimated(sent: bytes, got: bytes) -> TenantUsage:
    """The charge of one cloud answer estimated from its bodies."""
    prompt, completion = estimate(len(sent), len(got))
    cost = prompt * PRICE_MICRO[0] + completion * PRICE_MICRO[1]
    return TenantUsage(prompt + completion, cost, prompt + completion, cost)


def test_a_chunked_stream_is_charged_an_estimate(mesh: StreamMesh, cloud: OpenAIBackend) -> None:
    before = mesh.agent.totals("globex")
    body = stream_body()
    status, headers, got = post_chunked(mesh.listener, public("globex"), body)
    assert (status, headers.get("x-tiermesh-backend")) == (200, "cloud")
    # The filter reads only bodies with a content-length: this one went as it was sent,
    # so the stream carries no usage...
    (received,) = cloud.received
    assert (received.content_length, received.body) == (None, body)
    assert got.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in got.replace(b'\\"usage\\"', b"")
    # ...and is charged an estimate from both bodies' sizes.
    assert charged_estimate(mesh, "globex", before, 1) == estimated(body, got)


def test_an_http2_upload_without_a_length_is_charged_an_estimate(
    mesh: StreamMesh, cloud: OpenAIBackend, tmp_path: Path
) -> None:
    before = mesh.agent.totals("globex")
    body = stream_body()
    status, headers, got = post_http2(mesh.listener, public("globex"), body, tmp_path)
    assert (status, headers.get("x-tiermesh-backend")) == (200, "cloud")
    (received,) = cloud.received
    assert (received.content_length, received.body) == (None, body)
    assert got.endswith(b"data: [DONE]\n\n")
    assert charged_estimate(mesh, "globex", before, 1) == estimated(body, got)


def test_a_chunked_stream_that_asked_is_charged_its_usage(
    mesh: StreamMesh, cloud: OpenAIBackend
) -> None:
    """The estimate is only for answers without usage: a client that asks is charged
    exactly, whatever its upload's framing."""
    before = mesh.agent.totals("globex")
    body = stream_body(stream_options={"include_usage": True})
    status, _, got = post_chunked(mesh.listener, public("globex"), body)
    assert status == 200
    assert got.count(b'"choices": []') == 1
    mesh.wait_tokens("globex", before.tokens + 150)
    time.sleep(0.3)
    after = mesh.agent.totals("globex")
    assert after.tokens - before.tokens == 150
    assert after.estimated_tokens == before.estimated_tokens


def test_a_stream_whose_answer_has_no_usage_is_charged_an_estimate(
    mesh: StreamMesh, cloud: OpenAIBackend
) -> None:
    """The filter asked (the body has a content-length), the backend did not answer."""
    before = mesh.agent.totals("globex")
    body = stream_body("nousage")
    reply = mesh.send(public("globex"), body)
    assert (reply.status, reply.backend) == (200, "cloud")
    assert json.loads(cloud.received[0].body)["stream_options"] == {"include_usage": True}
    got = reply.body.encode()
    assert b'"choices": []' not in got
    assert charged_estimate(mesh, "globex", before, 1) == estimated(body, got)


def test_a_stream_cut_before_its_usage_chunk_is_charged_an_estimate(
    mesh: StreamMesh, cloud: OpenAIBackend
) -> None:
    before = mesh.agent.totals("globex")
    body = stream_body("cut")
    status, _, got = post_chunked(mesh.listener, public("globex"), body)
    assert status == 200
    assert not got.endswith(b"data: [DONE]\n\n")
    charged = charged_estimate(mesh, "globex", before, 1)
    # The answer's bytes are those Envoy sent before the cut (at least what the client got).
    assert charged.tokens == charged.estimated_tokens
    assert charged.tokens >= estimated(body, got).tokens


def test_a_tenant_that_streams_past_its_budget_is_moved_to_its_fallback_never_429(
    mesh: StreamMesh, cloud: OpenAIBackend
) -> None:
    before = mesh.agent.totals("acme")
    assert before.cost_micro == 0
    body = stream_body()
    status, headers, got = post_chunked(mesh.listener, public("acme"), body)
    assert (status, headers.get("x-tiermesh-backend")) == (200, "cloud")
    charge = charged_estimate(mesh, "acme", before, 1)
    assert charge == estimated(body, got)
    assert charge.cost_micro >= TINY_BUDGET * 1_000_000
    deadline = time.monotonic() + 10
    while json.loads(mesh.agent.budget_file.read_text())["acme"]["spent_usd"] < TINY_BUDGET:
        assert time.monotonic() < deadline, "the budget file never showed the spend"
        time.sleep(0.05)

    for _ in range(3):
        status, headers, got = post_chunked(mesh.listener, public("acme"), stream_body())
        assert (status, headers.get("x-tiermesh-backend")) == (200, "edge")
        assert headers.get("x-tiermesh-tier") == "local"
        assert got.endswith(b"data: [DONE]\n\n")
    reply = mesh.send(public("acme"), stream_body())
    assert (reply.status, reply.backend, reply.tier) == (200, "edge", "local")
    assert len(cloud.received) == 1
    # Another tenant keeps its route.
    status, headers, _ = post_chunked(mesh.listener, public("globex"), stream_body())
    assert (status, headers.get("x-tiermesh-backend")) == (200, "cloud")
