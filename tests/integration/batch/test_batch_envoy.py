"""The batch paths through a real Envoy: compiled (and verified) routes to the node's batch
service on its Unix socket, after the real ext_authz with the shipped request policy and a
durable decision log; the service decides each line with that same authorizer."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.batch.support import chat_line, jsonl
from tests.integration.flows.conftest import KEY_NAME, NODE, envoy_with, flow_catalog
from tests.support.authz import authz_settings, running_authz
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.agents.batch import (
    AuthorizerDecider,
    BatchHttpServer,
    BatchService,
    JobQueue,
    QueueSettings,
)
from tiermesh.agents.decisionlog import read_spool
from tiermesh.controlplane.model import BatchSettings, MeshModel, NodeSettings
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.procs.nats import NatsServer
from tiermesh.procs.ports import free_port

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(shutil.which("nats-server") is None, reason="nats-server is not installed"),
]

HEADERS = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}


@dataclass
class BatchEdge:
    port: int
    spool: Path

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=body,
            method=method,
            headers={**HEADERS, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, exc.read()
            finally:
                exc.close()

    def upload(self, content: bytes) -> tuple[int, bytes]:
        boundary = "tiermeshboundary"
        body = (
            (
                f'--{boundary}\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
                f'--{boundary}\r\ncontent-disposition: form-data; name="file"; '
                'filename="in.jsonl"\r\ncontent-type: application/jsonl\r\n\r\n'
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.send(
            "POST", "/v1/files", body, {"content-type": f"multipart/form-data; boundary={boundary}"}
        )


@pytest.fixture
def batch_edge(tmp_path: Path) -> Iterator[BatchEdge]:
    catalog = flow_catalog(free_port(), free_port())
    plan = evaluate_plan(catalog)
    socket_path = tmp_path / "batch.sock"
    spool = tmp_path / "decisions"
    with NatsServer() as nats_server, running_authz(spool) as authz:

        async def start() -> tuple[JobQueue, BatchHttpServer]:
            queue = await JobQueue.connect(QueueSettings(url=nats_server.url))
            service = BatchService(queue, AuthorizerDecider(authz.authorizer))
            server = BatchHttpServer(service, socket_path, max_upload_bytes=1 << 20)
            await server.start()
            return queue, server

        queue, server = authz.run(start())
        try:
            listener = free_port()
            settings = NodeSettings(
                app_port=listener,
                authz=authz_settings(authz),
                credentials={KEY_NAME: "unused"},
                batch=BatchSettings(socket=str(socket_path)),
            )
            model = MeshModel.build([plan], {NODE: settings})
            snapshot = compile_and_verify(model, NODE, catalog)
            with envoy_with(snapshot, tmp_path / "envoy"):
                edge = BatchEdge(listener, spool)
                deadline = time.monotonic() + 20
                while b"batch_not_found" not in edge.send("GET", "/v1/batches/batch_x")[1]:
                    assert time.monotonic() < deadline, "the batch route never answered"
                    time.sleep(0.1)
                yield edge
        finally:
            authz.run(server.stop())
            authz.run(queue.close())


def test_a_batch_is_submitted_through_envoy_and_every_line_is_audited(
    batch_edge: BatchEdge,
) -> None:
    lines = [chat_line("ok-0", "hello"), chat_line("pii-1", "mail jane.doe@example.com")]
    status, raw = batch_edge.upload(jsonl(lines))
    assert status == 200, raw
    file = json.loads(raw)
    request = json.dumps({"input_file_id": file["id"], "endpoint": "/v1/chat/completions"})
    status, raw = batch_edge.send(
        "POST", "/v1/batches", request.encode(), {"content-type": "application/json"}
    )
    assert status == 200, raw
    batch = json.loads(raw)
    assert batch["request_counts"]["total"] == 2
    status, raw = batch_edge.send("GET", f"/v1/batches/{batch['id']}")
    assert status == 200
    assert json.loads(raw)["status"] == "in_progress"
    records = [s.record for s in read_spool(batch_edge.spool)]
    paths = [r.input["request"]["path"] for r in records]
    # the upload, the submission, one decision per line (in any order), the status read
    assert paths.count("/v1/files") == 1
    assert paths.count("/v1/batches") == 1
    line_records = [r for r in records if r.input["request"]["path"] == "/v1/chat/completions"]
    assert sorted(r.result["sensitivity"] for r in line_records) == ["public", "restricted"]
    assert {r.input["tenant"] for r in line_records} == {"acme"}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/files", 404),  # listing files is not served
        ("GET", "/v1/batches/a/../b", 404),  # no normalising: outside the surface
        ("GET", "/v1/batches/a%2Fb", 404),
        ("DELETE", "/v1/batches/batch_1", 404),
        ("POST", "/v1/batches/batch_1", 404),
        ("GET", "/v1/batches/batch_1/cancel/more", 404),
    ],
)
def test_paths_outside_the_batch_surface_never_reach_the_service(
    batch_edge: BatchEdge, method: str, path: str, status: int
) -> None:
    got, raw = batch_edge.send(method, path)
    assert got == status
    assert b"not an API this mesh serves" in raw or b"error" not in raw
