"""A test backend standing for one tier: answers with its name, optionally late.

Unlike :class:`tiermesh.demo.standin.StandinBackend` it can delay its response headers
(to test hedging) and records the ``x-tiermesh-upstream-model`` header of each request.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(health=self.path == "/health")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._answer(health=False)

    def _answer(self, *, health: bool) -> None:
        owner = self.server.owner
        if not health:
            owner.models.append(self.headers.get("x-tiermesh-upstream-model"))
            owner.requests.append({k.lower(): v for k, v in self.headers.items()})
            if owner.delay_s:
                time.sleep(owner.delay_s)
        body = owner.name.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-tiermesh-backend", owner.name)
        self.end_headers()
        if not health and owner.body_delay_s:
            self.wfile.flush()
            time.sleep(owner.body_delay_s)
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: TierBackend

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        # Headers and body leave in two writes: without this, Nagle holds the body until
        # Envoy's delayed ACK of the headers (~40 ms), which skews every timing test.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.owner.lock:
            self.owner.connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self.owner.lock:
            self.owner.connections.discard(request)
        super().shutdown_request(request)


class TierBackend:
    """An HTTP server on 127.0.0.1 (free port) answering with header ``x-tiermesh-backend``.

    ``stop`` also cuts open keep-alive connections, as a crashed server would.
    ``delay_s`` delays every non-health response before its headers, ``body_delay_s``
    between its headers and its body. ``stop`` closes the
    socket, so later connections are refused; it is idempotent.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.delay_s = 0.0
        self.body_delay_s = 0.0
        self.models: list[str | None] = []
        self.requests: list[dict[str, str]] = []
        """The headers of each request answered (health checks excluded)."""
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._stopped = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()
            with self.lock:
                open_connections = list(self.connections)
            for connection in open_connections:  # kill keep-alive connections Envoy pools
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._thread.join(timeout=5)
