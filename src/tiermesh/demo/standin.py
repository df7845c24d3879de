"""A tier stand-in: a tiny HTTP server that answers every request with its own name.

It stands where a model server will be, so routing can be observed before (and without)
real models: the JSON body and the ``x-tiermesh-backend`` header name the backend that
answered. ``POST /v1/chat/completions`` gets an OpenAI-shaped completion whose content says
which backend produced it. It is not a model and says so.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["StandinBackend"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer({"backend": self.server.backend_name, "path": self.path})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        name = self.server.backend_name
        if self.path.startswith("/v1/chat/completions"):
            self._answer(
                {
                    "id": f"standin-{time.time_ns()}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"answered by {name}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3},
                }
            )
        else:
            self._answer({"backend": name, "path": self.path})

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-tiermesh-backend", self.server.backend_name)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    backend_name = ""

    def get_request(self) -> tuple[socket.socket, Any]:
        # Headers and body leave in two writes; with Nagle on, the body waits for the
        # peer's delayed ACK of the headers (~40 ms on Linux) on every keep-alive answer.
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


class StandinBackend:
    """A stand-in backend on ``host:port`` (port 0 picks a free one), served by a thread."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self._server = _Server((host, port), _Handler)
        self._server.backend_name = name
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"standin-{name}", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> StandinBackend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandinBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
