"""Bodies that once carried personal data past ext_authz to the cloud tier, sent through a
real Envoy with the compiled config, the real authz server and the real request policy.

Public reasoning traffic goes to the cloud backend first (see test_envoy_authz.py), so a
body the inspector misreads lands there. Each case must be answered by a local tier or
refused, and the cloud backend must have received nothing.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.authz.conftest import MAX_BODY, AuthzMesh, Reply, chat
from tiermesh.agents.decisionlog import read_spool

pytestmark = pytest.mark.envoy

PUBLIC_REASONING = {
    "x-tiermesh-tenant": "acme",
    "x-tiermesh-sensitivity": "public",
    "x-tiermesh-task": "reasoning",
}
PATH = "/v1/chat/completions"
SSN = "123-45-6789"


def streamed_body() -> bytes:
    """A chat body whose first ``MAX_BODY`` bytes are harmless and whose tail, which the
    ext_authz check never sees, holds an SSN."""
    body = chat("x" * MAX_BODY + f" and my ssn is {SSN}")
    assert SSN.encode() not in body[:MAX_BODY]
    assert SSN.encode() in body[MAX_BODY:]
    return body


def send_chunked(listener: int, body: bytes, chunks: list[int], pause_s: float = 0.0) -> Reply:
    """POST ``body`` with ``transfer-encoding: chunked`` (no content-length), in chunks of
    the given sizes (the rest in one last chunk), pausing between them."""

    def pieces() -> Iterator[bytes]:
        offset = 0
        for size in chunks:
            yield body[offset : offset + size]
            offset += size
            time.sleep(pause_s)
        if offset < len(body):
            yield body[offset:]

    connection = http.client.HTTPConnection("127.0.0.1", listener, timeout=10)
    try:
        connection.request(
            "POST",
            PATH,
            body=pieces(),
            headers={"content-type": "application/json", **PUBLIC_REASONING},
            encode_chunked=True,
        )
        response = connection.getresponse()
        payload = response.read()
        headers = response.headers
        return Reply(
            response.status,
            headers.get("x-tiermesh-backend"),
            headers.get("x-tiermesh-tier"),
            headers.get("x-tiermesh-decision-id"),
            payload.decode(errors="replace"),
        )
    finally:
        connection.close()


def assert_kept_off_the_cloud(mesh: AuthzMesh, reply: Reply) -> None:
    assert reply.status in (200, 403), reply
    if reply.status == 200:
        assert (reply.backend, reply.tier) == ("edge", "local"), reply
    assert mesh.backends["cloud"].models == [], "the cloud backend got the request"


def record_of(mesh: AuthzMesh, reply: Reply) -> dict[str, Any]:
    """The decision record's policy input for ``reply`` (durable when the answer came)."""
    assert reply.decision_id is not None
    records = {str(s.record.decision_id): s.record for s in read_spool(mesh.spool)}
    document: dict[str, Any] = records[reply.decision_id].input
    return document


def test_a_clean_body_of_exactly_the_limit_with_its_length_still_goes_to_the_cloud(
    authz_mesh: AuthzMesh,
) -> None:
    """No false restriction: a full buffer whose content-length says it is complete."""
    body = chat("y" * (MAX_BODY - len(chat(""))))
    assert len(body) == MAX_BODY
    reply = authz_mesh.send(PUBLIC_REASONING, body)
    assert (reply.status, reply.backend, reply.tier) == (200, "cloud", "cloud")
    payload = record_of(authz_mesh, reply)["payload"]
    assert payload["inspected_bytes"] == MAX_BODY
    assert payload["truncated"] is False


def test_a_chunked_body_with_pii_after_a_full_buffer_stays_off_the_cloud(
    authz_mesh: AuthzMesh,
) -> None:
    reply = send_chunked(authz_mesh.listener, streamed_body(), [MAX_BODY], pause_s=0.2)
    assert_kept_off_the_cloud(authz_mesh, reply)
    payload = record_of(authz_mesh, reply)["payload"]
    assert payload["truncated"] is True
    assert "declared_bytes" not in payload


def test_a_chunked_body_in_small_chunks_with_pauses_stays_off_the_cloud(
    authz_mesh: AuthzMesh,
) -> None:
    body = streamed_body()
    reply = send_chunked(authz_mesh.listener, body, [1024] * (len(body) // 1024), pause_s=0.01)
    assert_kept_off_the_cloud(authz_mesh, reply)
    assert record_of(authz_mesh, reply)["payload"]["truncated"] is True


def test_a_chunked_body_that_fits_the_buffer_is_read_whole(authz_mesh: AuthzMesh) -> None:
    """A chunked body that ends before the buffer fills is complete: its PII is found."""
    body = chat(f"my ssn is {SSN}")
    reply = send_chunked(authz_mesh.listener, body, [10, 10], pause_s=0.05)
    assert_kept_off_the_cloud(authz_mesh, reply)
    record = record_of(authz_mesh, reply)
    assert record["payload"]["truncated"] is False
    assert [f["kind"] for f in record["findings"]] == ["us_ssn"]


def curl_http2(listener: int, body: bytes, pause_s: float) -> Reply | None:
    """POST ``body`` over HTTP/2 (h2c, prior knowledge) without a content-length: curl
    uploads stdin of unknown size; the first ``MAX_BODY`` bytes go first, then a pause.
    None when no response came back (see the test below)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    fields = {"content-type": "application/json", **PUBLIC_REASONING}
    command = [curl, "--silent", "--show-error", "--http2-prior-knowledge", "-X", "POST"]
    command += ["-T", "-", "--max-time", "10", "--dump-header", "-", "--output", "/dev/null"]
    command += [arg for name, value in fields.items() for arg in ("-H", f"{name}: {value}")]
    command.append(f"http://127.0.0.1:{listener}{PATH}")
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdin is not None
        process.stdin.write(body[:MAX_BODY])
        process.stdin.flush()
        time.sleep(pause_s)
        out, err = process.communicate(body[MAX_BODY:], timeout=15)
    if process.returncode == 52:  # curl: "Empty reply from server"
        return None
    assert process.returncode == 0, err.decode(errors="replace")
    lines = out.decode(errors="replace").splitlines()
    assert lines[0].startswith("HTTP/2 "), lines
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if ":" in line)
    }
    return Reply(
        int(lines[0].split()[1]),
        headers.get("x-tiermesh-backend"),
        headers.get("x-tiermesh-tier"),
        headers.get("x-tiermesh-decision-id"),
        "",
    )


def test_an_http2_body_without_a_length_with_pii_after_a_full_buffer_stays_off_the_cloud(
    authz_mesh: AuthzMesh,
) -> None:
    """The test backends read only content-length bodies, so the local backend answers
    before it has read this one and Envoy may then reset the stream (curl sees no reply):
    where the request went is read from the backends and the decision record instead."""
    reply = curl_http2(authz_mesh.listener, streamed_body(), pause_s=0.2)
    if reply is not None:
        assert_kept_off_the_cloud(authz_mesh, reply)
    assert authz_mesh.backends["cloud"].models == [], "the cloud backend got the request"
    assert len(authz_mesh.backends["edge"].models) == 1
    # The fixture's readiness probes are small bodies: this is the one that filled the buffer.
    (record,) = [
        s.record
        for s in read_spool(authz_mesh.spool)
        if s.record.input["payload"]["inspected_bytes"] == MAX_BODY
    ]
    assert record.result["sensitivity"] == "restricted"
    payload = record.input["payload"]
    assert payload["truncated"] is True
    assert "declared_bytes" not in payload, "curl sent a content-length"


def content_parts(*texts: str) -> bytes:
    parts = [{"type": "text", "text": t} for t in texts]
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": parts}]}).encode()


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


BODIES = {
    "bom and an escaped at sign": b"\xef\xbb\xbf"
    + b'{"model": "m", "messages": [{"role": "user", '
    + b'"content": "write to jane.doe\\u0040example.com"}]}',
    "pii in the first of two content keys": b'{"model": "m", "messages": [{"role": "user", '
    + f'"content": "my ssn is {SSN}", "content": "hello"'.encode()
    + b"}]}",
    "card number as a json number": json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 4111111111111111}
    ).encode(),
    "card split over two content parts": content_parts("card 4111 1111", "1111 1111 thanks"),
    "email split over two messages": json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": c} for c in ("jane.doe", "@example.com")],
        }
    ).encode(),
    "fullwidth card digits": json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": fullwidth("4111 1111 1111 1111")}]},
        ensure_ascii=False,
    ).encode(),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_a_body_the_inspector_once_misread_stays_off_the_cloud(
    authz_mesh: AuthzMesh, name: str
) -> None:
    body = BODIES[name]
    json.loads(body.decode("utf-8-sig"))  # each is JSON an upstream parser reads
    reply = authz_mesh.send(PUBLIC_REASONING, body)
    assert_kept_off_the_cloud(authz_mesh, reply)
    assert record_of(authz_mesh, reply)["findings"], "restricted for what it holds"
