"""An ADS server on its own event-loop thread, so tests can drive Envoy with blocking calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from tiermesh.xds import AdsServer, Callbacks, NackRecord, Snapshot, SnapshotCache, start_server
from tiermesh.xds.status import NodeStatus

T = TypeVar("T")


@dataclass
class PushLog(Callbacks):
    pushes: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    nacks: list[tuple[str, NackRecord]] = field(default_factory=list)

    def on_push(
        self, node_id: str, type_url: str, version: str, nonce: str, names: Sequence[str]
    ) -> None:
        self.pushes.append((type_url, version, tuple(names)))

    def on_nack(self, node_id: str, type_url: str, nack: NackRecord) -> None:
        self.nacks.append((type_url, nack))


class XdsThread:
    """Cache + ADS server on a background loop; every method is safe from the test thread."""

    def __init__(self, port: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.log = PushLog()
        self.cache: SnapshotCache = self.call(SnapshotCache)
        self.ads: AdsServer = self.call(lambda: AdsServer(self.cache, callbacks=self.log))
        self.server: grpc.aio.Server | None = None
        self.port = port
        self.start()

    def call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self.run(run())

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def start(self) -> None:
        self.server, self.port = self.run(start_server(self.ads, f"127.0.0.1:{self.port}"))

    def stop_server(self) -> None:
        if self.server is not None:
            self.run(self.server.stop(grace=None))
            self.server = None

    def set_snapshot(self, key: str, snapshot: Snapshot) -> bool:
        return self.call(lambda: self.cache.set_snapshot(key, snapshot))

    def status(self, node_id: str) -> NodeStatus | None:
        return self.call(lambda: self.ads.status.get(node_id))

    def close(self) -> None:
        self.stop_server()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
