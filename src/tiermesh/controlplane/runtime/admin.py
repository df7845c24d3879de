"""A tiny read-only HTTP server for status and metrics (asyncio streams, no framework).

Routes (GET or HEAD only; anything else is 405, unknown paths 404):

- ``/status`` — the JSON document of :mod:`tiermesh.controlplane.runtime.status`;
- ``/metrics`` — Prometheus text exposition of the default registry;
- ``/healthz`` — ``ok``.

:class:`MetricsServer` serves ``/metrics`` alone (``--metrics``), for scrapers that must
not see ``/status``.

One request per connection (``Connection: close``), request head at most 8 KiB and read
within 5 s. There is no authentication: bind it to loopback. Runs on the event loop it was
started on, so the status callback may read loop-bound state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server

__all__ = ["AdminServer", "MetricsServer", "start_admin"]

log = logging.getLogger("tiermesh.controlplane.admin")
_MAX_HEAD: Final = 8 * 1024
_READ_TIMEOUT_S: Final = 5.0
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class AdminServer:
    """A started admin server; :meth:`aclose` stops it."""

    def __init__(self, server: asyncio.Server, host: str, port: int) -> None:
        self._server = server
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def aclose(self) -> None:
        """Stop listening and wait for open requests. Idempotent."""
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)


def _response(status: int, content_type: str, body: bytes, *, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def _route(method: str, path: str, status: Callable[[], dict[str, Any]]) -> bytes:
    head = method == "HEAD"
    if method not in ("GET", "HEAD"):
        return _response(405, "text/plain", b"method not allowed\n")
    path = path.split("?", 1)[0]
    if path == "/status":
        body = json.dumps(status(), indent=2, sort_keys=True).encode() + b"\n"
        return _response(200, "application/json", body, head=head)
    if path == "/metrics":
        return _response(200, CONTENT_TYPE_LATEST, generate_latest(), head=head)
    if path == "/healthz":
        return _response(200, "text/plain", b"ok\n", head=head)
    return _response(404, "text/plain", b"not found\n", head=head)


class MetricsServer:
    """prometheus-client's ``/metrics`` server (its own thread) over the default registry;
    :meth:`close` stops it."""

    def __init__(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host)
        self.host = host
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


async def start_admin(host: str, port: int, status: Callable[[], dict[str, Any]]) -> AdminServer:
    """Listen on ``host:port`` (0 = any free port); ``status()`` builds ``/status``.

    Raises ``OSError`` when the address cannot be bound.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(head) > _MAX_HEAD or len(parts) != 3:
                reply = _response(400, "text/plain", b"bad request\n")
            else:
                reply = _route(parts[0], parts[1], status)
            writer.write(reply)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        except Exception:
            log.exception("admin request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)
    bound = server.sockets[0].getsockname()[1]
    return AdminServer(server, host, int(bound))
