"""A test backend standing for one tier that answers like an OpenAI-compatible server:
JSON with ``usage``, or an SSE stream whose last chunk carries it (``"stream": true``)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROMPT_TOKENS = 120
COMPLETION_TOKENS = 30


class ChatHandler(BaseHTTPRequestHandler):
    """What the test backends share: ``GET`` answers ``{}``, every answer names the
    backend (``x-tiermesh-backend``: the server's ``owner.name``), no access log."""

    server: Any
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._send(200, "application/json", b"{}")

    def _start_stream(self) -> None:
        """Headers of a chunked SSE answer; then `_chunk` each piece, ``b""`` last."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-tiermesh-backend", self.server.owner.name)
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-tiermesh-backend", self.server.owner.name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Handler(ChatHandler):
    server: _Server

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        owner = self.server.owner
        owner.requests.append(self.headers.get("x-tiermesh-tenant"))
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        if not request.get("stream"):
            answer = {
                "object": "chat.completion",
                "choices": [{"message": {"role": "assistant", "content": owner.name}}],
                "usage": usage,
            }
            self._send(200, "application/json", json.dumps(answer).encode())
            return
        self._start_stream()
        # A decoy in the content: an escaped "usage" inside a string must not count.
        words = [owner.name, ' {\\"usage\\": {\\"prompt_tokens\\": 999999}}']
        events = [{"choices": [{"delta": {"content": w}}], "usage": None} for w in words]
        events.append({"choices": [], "usage": usage})
        for event in events:
            self._chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: UsageBackend

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self.owner.lock:
            self.owner.connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self.owner.lock:
            self.owner.connections.discard(request)
        super().shutdown_request(request)


class UsageBackend:
    """An HTTP server on 127.0.0.1 (free port). ``requests`` lists the tenant header of
    every chat request it answered."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[str | None] = []
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and cut the keep-alive connections Envoy pools, as a crashed
        server would (later connections are refused)."""
        self._server.shutdown()
        self._server.server_close()
        with self.lock:
            open_connections = list(self.connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
