"""The batch lane in ``tiermesh up``: a batch submitted to the edge node's app listener with
a tenant key, through Envoy and ext_authz, run by the on-prem nodes' workers on their
llama.cpp servers, its output fetched; a line with personal data never reaches a cloud
stand-in; no key, no batch."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.e2e.up_support import Up, cloud_posts, running_up
from tiermesh.procs.nats import NatsNotInstalled, NatsServer

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]


def _nats_installed() -> bool:
    try:
        NatsServer()
    except NatsNotInstalled:
        return False
    return shutil.which("etcd") is not None


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    if not _nats_installed():
        pytest.skip("nats-server is not installed")
    with running_up(tmp_path_factory.mktemp("up-batch") / "state") as running:
        yield running


def _send(
    up: Up, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{up.port}{path}", data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, exc.read()
        finally:
            exc.close()


def _line(custom_id: str, text: str) -> str:
    body = {"model": "local", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(line)


def _multipart(content: bytes) -> tuple[bytes, str]:
    boundary = "tiermeshe2e"
    body = (
        (
            f'--{boundary}\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "content-type: application/jsonl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_batch_runs_on_prem_and_its_output_is_fetched(up: Up) -> None:
    assert up.mesh["batch_queue"].startswith("nats://127.0.0.1:")
    headers = up.keyed({"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"})
    content = "\n".join(
        [_line("plain", "hello"), _line("personal", "mail jane.doe@example.com now")]
    ).encode()
    before = cloud_posts(up)
    body, content_type = _multipart(content)
    status, raw = _send(up, "POST", "/v1/files", body, {**headers, "content-type": content_type})
    assert status == 200, raw
    request = {"input_file_id": json.loads(raw)["id"], "endpoint": "/v1/chat/completions"}
    status, raw = _send(
        up,
        "POST",
        "/v1/batches",
        json.dumps(request).encode(),
        {**headers, "content-type": "application/json"},
    )
    assert status == 200, raw
    batch = json.loads(raw)
    deadline = time.monotonic() + 120
    while batch["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.5)
        status, raw = _send(up, "GET", f"/v1/batches/{batch['id']}", None, headers)
        assert status == 200, raw
        batch = json.loads(raw)
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    status, raw = _send(up, "GET", f"/v1/files/{batch['output_file_id']}/content", None, headers)
    assert status == 200
    rows = {json.loads(line)["custom_id"]: json.loads(line) for line in raw.decode().splitlines()}
    assert set(rows) == {"plain", "personal"}
    assert all(row["response"]["status_code"] == 200 for row in rows.values())
    assert cloud_posts(up) == before  # nothing of the batch reached a cloud stand-in


def test_no_key_no_batch(up: Up) -> None:
    status, raw = _send(up, "GET", "/v1/batches/batch_0", None, {"x-tiermesh-tenant": "acme"})
    assert status == 401, raw
    other = up.keyed({"x-tiermesh-tenant": "globex"})
    status, _ = _send(up, "GET", "/v1/batches/batch_0", None, other)
    assert status == 404
