from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tiermesh.xds import AdsServer, Callbacks, NackRecord, SnapshotCache, start_server


@dataclass
class RecordingCallbacks(Callbacks):
    events: list[tuple[str, ...]] = field(default_factory=list)
    nacks: list[NackRecord] = field(default_factory=list)

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        self.events.append(("ack", node_id, type_url, version))

    def on_nack(self, node_id: str, type_url: str, nack: NackRecord) -> None:
        self.events.append(("nack", node_id, type_url, nack.version))
        self.nacks.append(nack)


@dataclass
class Served:
    cache: SnapshotCache
    ads: AdsServer
    callbacks: RecordingCallbacks
    target: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    cache = SnapshotCache()
    callbacks = RecordingCallbacks()
    ads = AdsServer(cache, callbacks=callbacks)
    server, port = await start_server(ads, "127.0.0.1:0")
    try:
        yield Served(cache, ads, callbacks, f"127.0.0.1:{port}")
    finally:
        await server.stop(grace=None)
