"""A backend that streams like OpenAI's API, and a mesh of three of them behind a real
Envoy with the compiled config of a node that runs ext_authz and the usage server.

Unlike :class:`~tests.integration.budgets.backend.UsageBackend`, a stream carries the
usage chunk (``"choices": []``) only when the request asks for it with
``"stream_options": {"include_usage": true}``, and every request's raw body is kept. The
request's ``model`` picks how the events are written:

- ``"m"`` (or anything else): one write per event;
- ``"split"``: every event in two writes 50 ms apart, so Envoy reads it in two chunks;
- ``"together"``: the whole stream in one write;
- ``"slow"``: the content at once, the usage event and ``[DONE]`` :data:`SLOW_S` later;
- ``"sized"``: an SSE answer with ``content-length`` instead of chunks;
- ``"nousage"``: never the usage chunk, even when asked (a server that ignores
  ``stream_options``);
- ``"cut"``: the first two events, then the connection closes mid-stream.

A request body comes with ``content-length`` or chunked (``transfer-encoding``, as Envoy
forwards an upload without a length). A body that is not JSON gets a JSON answer with
usage.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.integration.authz.conftest import Reply, post_chat, wait_routes_served
from tests.integration.budgets.backend import COMPLETION_TOKENS, PROMPT_TOKENS, ChatHandler
from tests.integration.budgets.conftest import NOBODY, priced_catalog
from tests.integration.budgets.harness import BudgetThread
from tests.integration.compiler.conftest import NODE
from tests.support.xdsthread import XdsThread
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.agents.usage import Prices, TenantUsage
from tiermesh.controlplane.generators.usage import MAX_BODY_BYTES
from tiermesh.controlplane.model import AuthzSettings, MeshModel, NodeSettings, UsageSettings
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, render_bootstrap

SLOW_S = 0.5
WORDS = ("Hello", ' "usage": {"prompt_tokens": 999999, "completion_tokens": 1}', " world")
"""The streamed content; the second word is a decoy: ``usage`` inside a string."""


@dataclass(frozen=True)
class Received:
    """One request as the backend got it."""

    body: bytes
    content_length: int | None


def _event(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


def stream_events(request: dict[str, Any]) -> list[bytes]:
    """The SSE events an OpenAI-compatible server sends for ``request``."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    options = request.get("stream_options") or {}
    asked = options.get("include_usage") is True and request.get("model") != "nousage"
    extra: dict[str, Any] = {"usage": None} if asked else {}
    events = [
        _event(head | {"choices": [{"index": 0, "delta": {"content": w}}]} | extra) for w in WORDS
    ]
    events.append(
        _event(head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]} | extra)
    )
    if asked:
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        events.append(_event(head | {"choices": [], "usage": usage}))
    events.append(_event("[DONE]"))
    return events


class _Handler(ChatHandler):
    server: _Server

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def do_POST(self) -> None:  # noqa: N802 - the HTTP method handler's name
        length = self.headers.get("content-length")
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = self._read_chunked()
        else:
            body = self.rfile.read(int(length or 0))
        owner = self.server.owner
        owner.received.append(Received(body, None if length is None else int(length)))
        try:
            request = json.loads(body)
        except ValueError:
            request = {}
        if not isinstance(request, dict) or request.get("stream") is not True:
            usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS}
            answer = {"choices": [{"message": {"content": owner.name}}], "usage": usage}
            self._send(200, "application/json", json.dumps(answer).encode())
            return
        events = stream_events(request)
        mode = request.get("model")
        if mode == "sized":
            self._send(200, "text/event-stream", b"".join(events))
            return
        self._start_stream()
        if mode == "together":
            self._chunk(b"".join(events))
        elif mode == "split":
            for event in events:
                half = len(event) // 2
                self._chunk(event[:half])
                time.sleep(0.05)
                self._chunk(event[half:])
        elif mode == "cut":
            for event in events[:2]:
                self._chunk(event)
            time.sleep(0.05)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        elif mode == "slow":
            done = 2 if request.get("stream_options") else 1
            self._chunk(b"".join(events[:-done]))
            time.sleep(SLOW_S)
            self._chunk(b"".join(events[-done:]))
        else:
            for event in events:
                self._chunk(event)
        self._chunk(b"")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: OpenAIBackend


class OpenAIBackend:
    """An HTTP server on 127.0.0.1 (free port); ``received`` lists every POST."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[Received] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@dataclass
class StreamMesh:
    backends: dict[str, OpenAIBackend]
    listener: int
    agent: BudgetThread

    def send(self, headers: dict[str, str], body: bytes) -> Reply:
        return post_chat(self.listener, headers, body)

    def wait_tokens(self, tenant: str, tokens: int, timeout_s: float = 10) -> TenantUsage:
        """The tenant's totals once they reach ``tokens``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            totals = self.agent.totals(tenant)
            if totals.tokens >= tokens:
                return totals
            time.sleep(0.05)
        raise AssertionError(f"{tenant}: {self.agent.totals(tenant)} after {timeout_s} s")


@contextmanager
def stream_mesh(tmp_path: Path, max_body_bytes: int | None = None) -> Iterator[StreamMesh]:
    """Envoy with ext_authz and usage accounting in front of three :class:`OpenAIBackend`
    tiers, ready to route. ``max_body_bytes`` replaces ext_authz's default bound on the
    request bodies it reads, which the usage filter follows."""
    backends = {name: OpenAIBackend(name) for name in ("edge", "gpu", "cloud")}
    catalog = priced_catalog({n: b.port for n, b in backends.items()})
    agent = BudgetThread(tmp_path, Prices.from_catalog(catalog))
    xds = XdsThread()
    try:
        listener = free_port()
        settings = NodeSettings(
            app_port=listener,
            authz=AuthzSettings(
                port=agent.authz_port, max_body_bytes=max_body_bytes or MAX_BODY_BYTES
            ),
            usage=UsageSettings(port=agent.usage_port, flush_interval_ms=50),
        )
        model = MeshModel.build([evaluate_plan(catalog)], {NODE: settings})
        xds.set_snapshot(NODE, compile_and_verify(model, NODE, catalog))
        spec = BootstrapSpec(
            node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=free_port()
        )
        with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE) as envoy:
            envoy.wait_ready(timeout=20)
            mesh = StreamMesh(backends, listener, agent)
            wait_routes_served(listener, NOBODY, lambda status: status != 503)
            for backend in backends.values():
                backend.received.clear()
            yield mesh
    finally:
        xds.close()
        agent.close()
        for backend in backends.values():
            backend.stop()
