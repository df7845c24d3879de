"""The dashboard's HTTP server on a real loopback socket: routes, headers, authentication."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.dashboard.helpers import HOSTILE, status_document
from tiermesh.controlplane.dashboard import (
    AuditSummary,
    DashboardNeedsAuth,
    DashboardServer,
    dashboard_document,
    start_dashboard,
)

TOKEN = "dashboard-token-0123456789"
calls: list[int] = []


async def view() -> dict[str, Any]:
    calls.append(1)
    import datetime as dt  # noqa: PLC0415

    return dashboard_document(status_document(), AuditSummary(), now=dt.datetime.now(dt.UTC))


async def get(
    server: DashboardServer, path: str, *, method: str = "GET", headers: str = ""
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(5):
        raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body


@pytest.fixture
async def open_server() -> AsyncIterator[DashboardServer]:
    server = await start_dashboard("127.0.0.1", 0, view)
    try:
        yield server
    finally:
        await server.aclose()


async def test_page_json_and_assets(open_server: DashboardServer) -> None:
    status, headers, body = await get(open_server, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert b"<h1>tiermesh</h1>" in body
    assert HOSTILE.encode() not in body

    status, headers, body = await get(open_server, "/api/dashboard")
    document = json.loads(body)
    assert status == 200
    assert document["view"]["policy"]["revision"] == 7
    assert document["html"].startswith('<p class="stamp">')

    for path, kind in (("/dashboard.js", "text/javascript"), ("/dashboard.css", "text/css")):
        status, headers, _ = await get(open_server, path)
        assert (status, headers["content-type"].split(";")[0]) == (200, kind)
    assert (await get(open_server, "/nope"))[0] == 404
    assert (await get(open_server, "/", method="POST"))[0] == 405
    assert (await get(open_server, "/", method="HEAD"))[2] == b""


async def test_a_token_guards_everything_but_healthz() -> None:
    server = await start_dashboard("127.0.0.1", 0, view, token=TOKEN)
    try:
        status, headers, _ = await get(server, "/")
        assert status == 401
        assert headers["www-authenticate"].startswith("Basic realm=")
        assert (await get(server, "/api/dashboard"))[0] == 401
        assert (await get(server, "/healthz"))[0] == 200
        bearer = f"Authorization: Bearer {TOKEN}\r\n"
        assert (await get(server, "/api/dashboard", headers=bearer))[0] == 200
        basic = base64.b64encode(f"ops:{TOKEN}".encode()).decode()
        assert (await get(server, "/", headers=f"Authorization: Basic {basic}\r\n"))[0] == 200
        wrong = "Authorization: Bearer not-the-token-at-all\r\n"
        assert (await get(server, "/", headers=wrong))[0] == 401
    finally:
        await server.aclose()


async def test_it_refuses_to_serve_other_hosts_without_a_token() -> None:
    with pytest.raises(DashboardNeedsAuth):
        await start_dashboard("0.0.0.0", 0, view)
