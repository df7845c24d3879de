"""The tenant API keys the control plane serves to nodes, following the store.

:class:`KeyWatcher` reads ``apikeys/`` and watches it, so a key created or revoked with
``tiermesh key`` reaches the registry service within one watch event. The served keys go
out inside the request policy (``RequestPolicyBundle.api_keys``), and a change is
announced on every registry session the way a bundle change is: the announced
:class:`~tiermesh.controlplane.api.BundleRef` (:func:`announced_ref`) carries, as
``etcd_revision``, the later of the bundle's store revision and the keys' latest change,
so nodes old and new see a new ref and fetch the request policy again. No new message
field: a node that predates keys follows revocations too (it just cannot enforce them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Final, Protocol

from tiermesh.controlplane.api import ApiKeyEntry, BundleRef
from tiermesh.controlplane.store import (
    API_KEYS_PREFIX,
    ApiKeyRecord,
    Bundle,
    EventKind,
    Store,
    StoreError,
)
from tiermesh.controlplane.store.codec import decode_api_key
from tiermesh.tasks import cancel_and_wait

__all__ = ["NO_KEYS", "KeyWatcher", "ServedKeys", "ServedKeysSource", "announced_ref"]

log = logging.getLogger("tiermesh.nodeapi.keys")

_RETRY_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class ServedKeys:
    """The key digests served at one moment. ``revision`` is the store revision of the
    latest change seen (0: no key was ever created); ``entries`` are by id."""

    revision: int
    entries: tuple[ApiKeyEntry, ...]


NO_KEYS: Final = ServedKeys(0, ())


def _entry(record: ApiKeyRecord) -> ApiKeyEntry:
    return ApiKeyEntry(
        id=record.key_id, tenant=record.tenant, sha256=record.sha256, revoked=record.revoked
    )


def announced_ref(bundle: Bundle, keys: ServedKeys) -> BundleRef:
    """What sessions announce for ``bundle`` served with ``keys`` (module doc)."""
    return BundleRef(
        revision=bundle.revision,
        sha256=bundle.sha256,
        etcd_revision=max(bundle.etcd_revision, keys.revision),
    )


class ServedKeysSource(Protocol):
    """Which keys the control plane serves. Called on the event loop."""

    @property
    def served_keys(self) -> ServedKeys: ...

    async def next_served_keys(self, after_revision: int, /) -> ServedKeys:
        """The served keys once their revision is not ``after_revision``."""
        ...


class KeyWatcher:
    """Follows ``apikeys/`` in ``store`` (module doc).

    Task safety: one event loop. :meth:`start` reads the keys once (raises ``StoreError``
    if it cannot) and starts the watch task; a broken watch is re-read and re-watched every
    second until :meth:`aclose`, serving the last keys read meanwhile.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._records: dict[str, ApiKeyRecord] = {}
        self._served = NO_KEYS
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def served_keys(self) -> ServedKeys:
        return self._served

    async def next_served_keys(self, after_revision: int, /) -> ServedKeys:
        async with self._changed:
            await self._changed.wait_for(lambda: self._served.revision != after_revision)
            return self._served

    async def start(self) -> None:
        revision = await self._read(first=True)
        self._task = asyncio.create_task(self._follow(revision), name="api-key-watch")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task])

    async def _read(self, *, first: bool = False) -> int:
        snapshot = await self._store.read_prefix(API_KEYS_PREFIX)
        records: dict[str, ApiKeyRecord] = {}
        for entry in snapshot.entries:
            key_id = entry.key.removeprefix(API_KEYS_PREFIX)
            try:
                records[key_id] = decode_api_key(key_id, entry.value, entry.mod_revision)
            except StoreError as exc:
                log.error("API key record skipped: %s", exc)
        if records != self._records:
            # At start the latest record's revision, the same on every replica; after a
            # broken watch the snapshot's, later than any change the watch missed.
            latest = max((r.mod_revision for r in records.values()), default=0)
            await self._publish(records, latest if first else snapshot.revision)
        return snapshot.revision

    async def _publish(self, records: dict[str, ApiKeyRecord], revision: int) -> None:
        self._records = records
        entries = tuple(_entry(records[k]) for k in sorted(records))
        async with self._changed:
            self._served = ServedKeys(revision, entries)
            self._changed.notify_all()
        log.info("serving %d API key(s) (store revision %d)", len(entries), revision)

    async def _follow(self, after: int) -> None:
        while True:
            try:
                async with self._store.watch(API_KEYS_PREFIX, after_revision=after) as events:
                    async for event in events:
                        key_id = event.key.removeprefix(API_KEYS_PREFIX)
                        records = dict(self._records)
                        if event.kind is EventKind.DELETE:
                            records.pop(key_id, None)
                        else:
                            try:
                                records[key_id] = decode_api_key(
                                    key_id, event.value, event.revision
                                )
                            except StoreError as exc:
                                log.error("API key record skipped: %s", exc)
                                continue
                        after = event.revision
                        await self._publish(records, event.revision)
            except StoreError as exc:
                log.warning("API key watch broke (%s); reading again in %.0fs", exc, _RETRY_S)
            await asyncio.sleep(_RETRY_S)
            with contextlib.suppress(StoreError):
                after = await self._read()
