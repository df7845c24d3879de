"""A node with a cascade handler: the tiny llama.cpp as the local step, the HTTPS cloud
stand-in as the next tier, compiled (and verified) from a plan the real routing policy made
for the ``triage`` cascade task, and pushed to a real Envoy that runs the real request
policy (ext_authz) on every request, the handler's step requests included."""

from __future__ import annotations

import http.client
import http.server
import json
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.integration.compiler.conftest import eventually
from tests.integration.flows.conftest import KEY_NAME, NODE, envoy_with, flow_catalog
from tests.integration.flows.harness import LoopThread
from tests.support.authz import authz_settings, running_authz
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.agents.cascade import TOKEN_HEADER, CascadeHandler
from tiermesh.agents.models import LlamaServer
from tiermesh.controlplane.api import Plan
from tiermesh.controlplane.model import CascadeSettings, MeshModel, NodeSettings
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.demo.cloud_standin import CloudStandin
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port


@dataclass
class Answer:
    status: int
    headers: Message
    body: str

    @property
    def tier(self) -> str | None:
        return self.headers.get("x-tiermesh-tier")

    def json(self) -> Any:
        return json.loads(self.body)


def send(port: int, headers: dict[str, str], body: bytes) -> Answer:
    """POST ``body`` to the listener's chat completions; any status is an answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Answer(int(response.status), response.headers, response.read().decode())
    except urllib.error.HTTPError as exc:
        try:
            return Answer(exc.code, exc.headers, exc.read().decode())
        finally:
            exc.close()


class Recorder:
    """A plain HTTP forwarder in front of the local model server that keeps the headers
    of every POST it forwards (lower-cased names): what the local backend saw."""

    def __init__(self, upstream: int) -> None:
        self.seen: list[dict[str, str]] = []
        recorder = self

        class Forward(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.command == "POST":
                    recorder.seen.append(headers)
                connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
                try:
                    sent = {k: v for k, v in headers.items() if k not in {"host", "connection"}}
                    connection.request(self.command, self.path, body=body, headers=sent)
                    response = connection.getresponse()
                    data = response.read()
                finally:
                    connection.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in {"transfer-encoding", "content-length", "connection"}:
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward  # noqa: N815 - http.server's names

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@dataclass
class CascadeMesh:
    """The running servers, Envoy's app listener and the plan; ``recorder`` is in front of
    the local step when asked for."""

    edge: LlamaServer
    cloud: CloudStandin
    handler: CascadeHandler
    plan: Plan
    listener: int
    envoy: EnvoyProcess
    recorder: Recorder | None = None

    def send(
        self,
        task: str,
        text: str = "hello",
        extra_headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Answer:
        body = {
            "model": "any",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 8,
            **extra,
        }
        headers = {
            "content-type": "application/json",
            "x-tiermesh-tenant": "acme",
            "x-tiermesh-sensitivity": "public",
            "x-tiermesh-task": task,
            **(extra_headers or {}),
        }
        return send(self.listener, headers, json.dumps(body).encode())

    def triage(self, text: str = "hello", **extra: Any) -> Answer:
        return self.send("triage", text, **extra)


CascadeFactory = Callable[..., AbstractContextManager[CascadeMesh]]


@pytest.fixture
def cascade_mesh(
    tmp_path: Path, loop_thread: LoopThread, edge_server: LlamaServer
) -> CascadeFactory:
    """``cascade_mesh(min_confidence)`` runs the node with that threshold for ``triage``;
    ``local_down=True`` puts the local step on a port nothing listens on; ``record=True``
    puts a :class:`Recorder` in front of it. The handler has a secret, as an agent's has."""

    @contextmanager
    def running(
        min_confidence: float, *, local_down: bool = False, record: bool = False
    ) -> Iterator[CascadeMesh]:
        cloud = CloudStandin(workdir=tmp_path / "cloud")
        cloud.start()
        listener = free_port()
        handler = CascadeHandler(listener, token=secrets.token_urlsafe(32))
        loop_thread.run(handler.start())
        recorder = Recorder(edge_server.port) if record else None
        try:
            edge_port = free_port() if local_down else edge_server.port
            if recorder is not None:
                edge_port = recorder.port
            catalog = flow_catalog(edge_port, cloud.port, min_confidence)
            plan = evaluate_plan(catalog)
            with running_authz(tmp_path / "decisions") as authz:
                assert handler.token is not None
                authz.trust_reentry(TOKEN_HEADER, handler.token)
                settings = NodeSettings(
                    app_port=listener,
                    authz=authz_settings(authz),
                    credentials={KEY_NAME: cloud.api_key},
                    cascade=CascadeSettings(port=handler.port),
                )
                model = MeshModel.build([plan], {NODE: settings})
                snapshot = compile_and_verify(model, NODE, catalog)
                with envoy_with(snapshot, tmp_path / "envoy") as (envoy, _):
                    mesh = CascadeMesh(edge_server, cloud, handler, plan, listener, envoy, recorder)
                    eventually(lambda: mesh.triage().status == 200, what="cascade answering")
                    yield mesh
        finally:
            loop_thread.run(handler.stop())
            cloud.stop()
            if recorder is not None:
                recorder.close()

    return running
