"""The dashboard's read-only HTTP server (asyncio streams, like the admin server).

Routes (GET or HEAD; anything else 405, unknown paths 404):

- ``/`` — the page (:func:`.render.page`), server-rendered;
- ``/api/dashboard`` — ``{"view": <dashboard document>, "html": <main content>}``, JSON,
  what the page's script polls and ``tiermesh top`` reads;
- ``/dashboard.js``, ``/dashboard.css``, ``/favicon.svg`` — the page's only assets;
- ``/healthz`` — ``ok`` (no authentication: it says nothing).

Authentication (:mod:`.auth`): none on loopback; elsewhere every route but ``/healthz``
needs the token, else 401 with a ``WWW-Authenticate: Basic`` challenge.
:func:`start_dashboard` refuses a non-loopback address without a token
(:class:`~tiermesh.controlplane.dashboard.errors.DashboardNeedsAuth`). Answers carry a
Content-Security-Policy that allows only same-origin scripts, styles and fetches (inline
``style`` attributes, which the server computes from numbers, are the one exception), no
framing, ``nosniff`` and ``no-store``.

One request per connection (``Connection: close``), request head at most 8 KiB read within
5 s. Runs on the event loop it was started on; ``view()`` is awaited there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from tiermesh.controlplane.dashboard import assets, render
from tiermesh.controlplane.dashboard.auth import authorized, check_bind

__all__ = ["DashboardServer", "start_dashboard"]

log = logging.getLogger("tiermesh.controlplane.dashboard")
_MAX_HEAD: Final = 8 * 1024
_READ_TIMEOUT_S: Final = 5.0
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}
_SECURITY_HEADERS: Final = (
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self';"
    " style-src-attr 'unsafe-inline'; connect-src 'self'; img-src 'self';"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options: nosniff",
    "X-Frame-Options: DENY",
    "Referrer-Policy: no-referrer",
    "Cache-Control: no-store",
)

_ASSETS: Final = {
    "/dashboard.js": ("text/javascript; charset=utf-8", assets.SCRIPT.encode()),
    "/dashboard.css": ("text/css; charset=utf-8", assets.STYLESHEET.encode()),
    "/favicon.svg": ("image/svg+xml", assets.ICON.encode()),
}

ViewSource = Callable[[], Awaitable[dict[str, Any]]]
"""Builds the dashboard document (:mod:`.view`) on each request."""


class DashboardServer:
    """A started dashboard; :meth:`aclose` stops it."""

    def __init__(self, server: asyncio.Server, host: str, port: int) -> None:
        self._server = server
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://host:port/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def aclose(self) -> None:
        """Stop listening and wait for open requests. Idempotent."""
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)


def _response(
    status: int, content_type: str, body: bytes, *, head: bool = False, extra: tuple[str, ...] = ()
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *_SECURITY_HEADERS,
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def _header(head: bytes, name: str) -> str | None:
    wanted = name.lower().encode()
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == wanted:
            return value.strip().decode("latin-1")
    return None


async def _route(
    method: str, path: str, authorization: str | None, token: str | None, view: ViewSource
) -> bytes:
    head = method == "HEAD"
    if method not in ("GET", "HEAD"):
        return _response(405, "text/plain", b"method not allowed\n")
    path = path.split("?", 1)[0]
    if path == "/healthz":
        return _response(200, "text/plain", b"ok\n", head=head)
    if not authorized(authorization, token):
        return _response(
            401,
            "text/plain",
            b"authentication required\n",
            head=head,
            extra=('WWW-Authenticate: Basic realm="tiermesh dashboard", charset="UTF-8"',),
        )
    if path == "/":
        body = render.page(await view()).encode()
        return _response(200, "text/html; charset=utf-8", body, head=head)
    if path == "/api/dashboard":
        document = await view()
        body = json.dumps({"view": document, "html": render.main(document)}).encode()
        return _response(200, "application/json", body, head=head)
    content_type, body = _ASSETS.get(path, ("text/plain", b"not found\n"))
    return _response(200 if path in _ASSETS else 404, content_type, body, head=head)


async def start_dashboard(
    host: str, port: int, view: ViewSource, *, token: str | None = None
) -> DashboardServer:
    """Listen on ``host:port`` (0 = any free port) and serve ``view()`` (module doc).

    Raises:
        DashboardNeedsAuth: ``host`` is not loopback and ``token`` is None.
        OSError: the address cannot be bound.
    """
    check_bind(host, port, token)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if len(head) > _MAX_HEAD or len(parts) != 3:
                reply = _response(400, "text/plain", b"bad request\n")
            else:
                try:
                    reply = await _route(
                        parts[0], parts[1], _header(head, "authorization"), token, view
                    )
                except Exception:
                    log.exception("dashboard request failed")
                    reply = _response(500, "text/plain", b"internal error\n")
            writer.write(reply)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)
    bound = server.sockets[0].getsockname()[1]
    return DashboardServer(server, host, int(bound))
