"""Snapshot cache: the latest snapshot per node key, and change notification for streams.

The ADS server sees the cache only through :class:`SnapshotSource`; it never builds
resources. Nodes whose ``node_key`` is equal share one snapshot object and therefore one
encoded copy of every response body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from envoy.config.core.v3 import base_pb2

from tiermesh.xds.snapshot import Snapshot

__all__ = ["SnapshotCache", "SnapshotSource", "node_id_key"]

Notify = Callable[[], None]
Unsubscribe = Callable[[], None]


def node_id_key(node: base_pb2.Node) -> str:
    """The default node key: each node id gets its own snapshot."""
    return str(node.id)


class SnapshotSource(Protocol):
    """What the ADS server needs from a cache.

    All methods are called on the event loop thread that runs the server; ``notify``
    callbacks are invoked on that thread too and must not block.
    """

    def node_key(self, node: base_pb2.Node) -> str: ...

    def get_snapshot(self, key: str) -> Snapshot | None: ...

    def subscribe(self, key: str, notify: Notify) -> Unsubscribe: ...


class SnapshotCache:
    """Latest snapshot per node key, with watchers notified on every version change.

    Not thread-safe: call every method from the event loop thread that serves the streams
    (use ``loop.call_soon_threadsafe`` from other threads). ``set_snapshot`` with a snapshot
    whose version equals the current one changes nothing and notifies nobody.

    ``serving``, when given, is asked on every :meth:`get_snapshot`: while it answers
    False the cache hands out no snapshot (streams, new or open, send nothing) though it
    keeps taking them; :meth:`notify_all` afterwards lets every stream catch up.
    """

    def __init__(
        self,
        node_key: Callable[[base_pb2.Node], str] = node_id_key,
        *,
        serving: Callable[[], bool] | None = None,
    ) -> None:
        self._node_key = node_key
        self._serving = serving
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, dict[int, Notify]] = {}
        self._next_watch = 0

    def node_key(self, node: base_pb2.Node) -> str:
        return self._node_key(node)

    def get_snapshot(self, key: str) -> Snapshot | None:
        if self._serving is not None and not self._serving():
            return None
        return self._snapshots.get(key)

    def stored(self, key: str) -> Snapshot | None:
        """``key``'s latest snapshot, whether or not it is being served."""
        return self._snapshots.get(key)

    def notify_all(self) -> None:
        """Tell every watcher to look again (after serving resumed)."""
        for watchers in list(self._watchers.values()):
            for notify in list(watchers.values()):
                notify()

    def keys(self) -> list[str]:
        return sorted(self._snapshots)

    def set_snapshot(self, key: str, snapshot: Snapshot) -> bool:
        """Publish ``snapshot`` for ``key``; returns whether anything changed."""
        current = self._snapshots.get(key)
        if current is not None and current.version == snapshot.version:
            return False
        self._snapshots[key] = snapshot
        for notify in list(self._watchers.get(key, {}).values()):
            notify()
        return True

    def clear_snapshot(self, key: str) -> None:
        """Forget ``key``'s snapshot; connected streams keep what they were sent."""
        self._snapshots.pop(key, None)

    def subscribe(self, key: str, notify: Notify) -> Unsubscribe:
        watch_id = self._next_watch
        self._next_watch += 1
        self._watchers.setdefault(key, {})[watch_id] = notify

        def unsubscribe() -> None:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.pop(watch_id, None)
                if not watchers:
                    del self._watchers[key]

        return unsubscribe

    def watcher_count(self, key: str) -> int:
        return len(self._watchers.get(key, {}))
