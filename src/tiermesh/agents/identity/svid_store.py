"""The agent's current identity and everyone who must hear when it changes.

One :class:`SvidStore` per agent holds the latest :class:`SvidMaterial`. Whoever obtains a
new identity (the rotation loop, a SPIRE source) calls :meth:`SvidStore.update`; consumers
either register a callback (SDS sets a new snapshot) or iterate :meth:`SvidStore.watch`
(each Workload API stream).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from tiermesh.agents.identity.errors import NoSvidError
from tiermesh.agents.identity.files import SvidFiles
from tiermesh.agents.identity.material import SvidMaterial

__all__ = ["SvidStore", "Unsubscribe"]

log = logging.getLogger("tiermesh.agents.identity")

Unsubscribe = Callable[[], None]


class SvidStore:
    """The latest identity, its version, and change notification.

    Task safety: bound to one event loop. Call every method from that loop's thread (from
    another thread use ``loop.call_soon_threadsafe(store.update, material)``). Callbacks run
    synchronously inside :meth:`update`, in registration order, and must not block; one that
    raises is logged and does not stop the others. Watchers see the latest identity only:
    one that falls behind skips intermediate versions, never sees an old one after a new one.
    """

    def __init__(self, *, files: SvidFiles | None = None) -> None:
        """``files``: also write every identity there (0700 dir, 0600 key) before notifying."""
        self._files = files
        self._material: SvidMaterial | None = None
        self._version = 0
        self._changed = asyncio.Event()
        self._callbacks: dict[int, Callable[[SvidMaterial], None]] = {}
        self._next_id = 0

    @property
    def current(self) -> SvidMaterial | None:
        """The identity now in use, or ``None`` before the first one."""
        return self._material

    @property
    def version(self) -> int:
        """How many identities were adopted (0 before the first)."""
        return self._version

    @property
    def files(self) -> SvidFiles | None:
        return self._files

    def require(self) -> SvidMaterial:
        """The identity now in use. Raises :class:`NoSvidError` before the first one."""
        if self._material is None:
            raise NoSvidError()
        return self._material

    def update(self, material: SvidMaterial) -> None:
        """Adopt ``material``: write the files (if configured), run callbacks, wake watchers.

        Raises ``OSError`` when the files cannot be written; the identity is then *not*
        adopted, so the files never fall behind what the Workload API and SDS serve.
        """
        if self._files is not None:
            self._files.write(material)
        self._material = material
        self._version += 1
        changed, self._changed = self._changed, asyncio.Event()
        for callback in list(self._callbacks.values()):
            try:
                callback(material)
            except Exception:
                log.exception("an identity subscriber failed; the others still run")
        changed.set()

    def subscribe(self, callback: Callable[[SvidMaterial], None]) -> Unsubscribe:
        """Call ``callback(material)`` on every later :meth:`update`. Returns an unsubscribe."""
        key = self._next_id
        self._next_id += 1
        self._callbacks[key] = callback

        def unsubscribe() -> None:
            self._callbacks.pop(key, None)

        return unsubscribe

    async def wait(self) -> SvidMaterial:
        """The current identity, waiting for the first one if there is none yet."""
        async for material in self.watch():
            return material
        raise AssertionError("watch() never ends")  # pragma: no cover

    async def watch(self) -> AsyncIterator[SvidMaterial]:
        """Yield the current identity (after waiting for one), then each newer one. Never
        ends by itself; cancel the consuming task or close the iterator to stop."""
        seen = 0
        while True:
            changed = self._changed
            if self._version == seen:
                await changed.wait()
                continue
            seen = self._version
            material = self._material
            assert material is not None
            yield material
