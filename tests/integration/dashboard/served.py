"""A real dashboard server (and admin server) on loopback, run on a thread's event loop so
that a test can drive the CLI against it in a subprocess or a pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

from tests.unit.dashboard.helpers import status_document
from tiermesh.controlplane.api import AnswerCounts
from tiermesh.controlplane.dashboard import AuditSummary, dashboard_document, start_dashboard
from tiermesh.controlplane.runtime import start_admin
from tiermesh.controlplane.runtime.traffic import LiveTraffic

COUNTS = AnswerCounts(
    by_tier={"cloud": 4, "local": 2, "private": 1},
    first_choice=5,
    fallback=2,
    fallback_reasons={"unavailable": 1, "cascade": 1},
    refused={"401": 3},
)


class Served:
    """The dashboard and admin URLs of servers running on a background loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.traffic = LiveTraffic()
        self.traffic.add("edge-1", COUNTS)
        self.dashboard_url = ""
        self.admin_url = ""

    def add(self, node_id: str, counts: AnswerCounts) -> None:
        """Count more answers (from the test's thread)."""
        with self._lock:
            self.traffic.add(node_id, counts)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {**status_document(), "traffic": self.traffic.document()}

    async def view(self) -> dict[str, Any]:
        return dashboard_document(self.status(), AuditSummary(), now=dt.datetime.now(dt.UTC))


@contextlib.contextmanager
def served() -> Iterator[Served]:
    """Start both servers on a thread's loop; stop them and the loop on exit."""
    state = Served()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        dashboard = await start_dashboard("127.0.0.1", 0, state.view)
        admin = await start_admin("127.0.0.1", 0, state.status)
        state.dashboard_url, state.admin_url = dashboard.url, admin.url
        ready.set()
        try:
            await stop.wait()
        finally:
            await dashboard.aclose()
            await admin.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "servers did not start"
        yield state
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
