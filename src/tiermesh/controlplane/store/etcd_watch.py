"""A watch on an etcd prefix that follows the store from member to member."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Final, Self

import aetcd

from tiermesh.controlplane.store.errors import (
    StoreError,
    StoreRequestFailed,
    WatchCompacted,
)
from tiermesh.controlplane.store.failover import MemberPool, Retry, classify, failure_detail
from tiermesh.controlplane.store.keys import KeyLayout, prefix_range_end
from tiermesh.controlplane.store.models import EventKind, WatchEvent

__all__ = ["DEFAULT_PROBE_INTERVAL_S", "EtcdWatch"]

DEFAULT_PROBE_INTERVAL_S: Final = 1.0
_CANCEL_TIMEOUT_S: Final = 1.0


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Take a dropped read's outcome so the loop does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _raise_a_lost_cancellation() -> None:
    """Raise `asyncio.CancelledError` when the current task was cancelled and the
    cancellation did not arrive: on Python 3.11 the etcd client's ``asyncio.wait_for``
    returns the opened watch instead when both happen at once, and the task would follow
    the watch as if never cancelled (the caller's ``async with`` closes the watch)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError


class EtcdWatch:
    """`WatchStream` over one etcd watch, re-opened on another member when its member fails.

    Delivers every change under the prefix with a revision above ``after_revision`` exactly
    once, in revision order, across any number of failovers: it remembers the last revision
    it delivered and how many of that revision's events (one transaction can change several
    keys), re-opens from that revision and drops the events already delivered.

    A member is given up when the stream breaks, or when no event came for
    ``probe_interval_s`` and a linearizable read on that member fails within the pool's
    attempt timeout (a frozen member keeps its connection open but sends nothing; a member
    cut off from the quorum has no leader). The stream then re-opens on the next member as a
    read would. It raises `WatchCompacted` when the revision to resume from has been
    compacted, and `StoreUnavailable` naming every endpoint when no member took it back
    within the pool's ``timeout_s``; either closes the stream. `aclose` (from any task of
    the loop) ends iteration.
    """

    def __init__(
        self,
        pool: MemberPool,
        layout: KeyLayout,
        full_prefix: str,
        after_revision: int,
        *,
        probe_interval_s: float = DEFAULT_PROBE_INTERVAL_S,
    ) -> None:
        self._pool = pool
        self._layout = layout
        self._prefix = full_prefix.encode()
        self._probe_key = layout.bundle_meta.encode()
        self._probe_interval_s = probe_interval_s
        self._resume = after_revision + 1
        """The revision a re-open starts from: the last one delivered, or the first wanted."""
        self._delivered_at_resume = 0
        """How many events of revision ``_resume`` were delivered."""
        self._dropping = 0
        """Events of revision ``_resume`` still to drop after a re-open (already delivered)."""
        self._member: int | None = None
        self._watch: Any = None
        self._events: AsyncIterator[Any] | None = None
        self._pending: asyncio.Task[Any] | None = None
        self._failing_since: float | None = None
        self.reopened = 0
        """How many times the watch was re-opened after its member failed."""
        self._entered = False
        self._closed = False

    @property
    def member(self) -> str | None:
        """The endpoint the watch is open on now (None before it is entered)."""
        return None if self._member is None else self._pool.endpoints[self._member]

    async def __aenter__(self) -> Self:
        if self._entered or self._closed:
            raise RuntimeError("a watch stream can be entered once")
        self._entered = True
        try:
            await self._open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def _open(self) -> None:
        """Open the etcd watch from ``_resume`` on the current member (moving on as a read)."""

        async def attempt(client: Any) -> tuple[Any, Any]:
            watch = await client.watch(
                self._prefix,
                range_end=prefix_range_end(self._prefix),
                start_revision=self._resume,
            )
            return client, watch

        try:
            client, watch = await self._pool.call("watch", attempt, retry=Retry.ALWAYS)
        except StoreRequestFailed as exc:
            cause = exc.__cause__
            if isinstance(cause, aetcd.RevisionCompactedError):
                raise WatchCompacted(self._resume - 1, int(cause.compacted_revision)) from cause
            raise
        self._member = self._pool.index_of(client)
        self._watch = watch
        self._events = aiter(watch)
        if self._closed:  # closed from another task while this one re-opened it
            await self._drop_stream()
        self._dropping = self._delivered_at_resume
        _raise_a_lost_cancellation()

    async def _next_raw(self) -> Any:
        assert self._events is not None
        return await anext(self._events)

    async def __anext__(self) -> WatchEvent:
        if not self._entered:
            raise RuntimeError("enter the watch stream (async with) before iterating it")
        while True:
            if self._ended():
                await self.aclose()
                raise StopAsyncIteration
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._next_raw())
            pending = self._pending
            done, _ = await asyncio.wait({pending}, timeout=self._probe_interval_s)
            if self._ended():
                continue
            if not done:
                if await self._probe() or pending.done():
                    continue
                await self._fail_over("no answer to a probe")
                continue
            self._pending = None
            try:
                raw = pending.result()
            except StopAsyncIteration:
                await self._fail_over("the member ended the watch")
                continue
            except Exception as exc:
                if isinstance(exc, aetcd.RevisionCompactedError):
                    await self.aclose()
                    raise WatchCompacted(self._resume - 1, int(exc.compacted_revision)) from exc
                failure = classify(exc)
                if failure is None:
                    await self.aclose()
                    raise StoreRequestFailed("watch", failure_detail(exc)) from exc
                await self._fail_over(failure.detail)
                continue
            self._failing_since = None
            event = self._accept(raw)
            if event is not None:
                return event

    def _ended(self) -> bool:
        """Closed by `aclose` (maybe from another task while this one waited) or the store."""
        return self._closed or self._pool.closed

    def _accept(self, raw: Any) -> WatchEvent | None:
        """The event to deliver, or None for one delivered before a re-open."""
        revision = int(raw.kv.mod_revision)
        if revision < self._resume:
            return None
        if revision == self._resume:
            if self._dropping > 0:
                self._dropping -= 1
                return None
            self._delivered_at_resume += 1
        else:
            self._resume, self._delivered_at_resume, self._dropping = revision, 1, 0
        kind = EventKind.PUT if raw.kind == "PUT" else EventKind.DELETE
        key = self._layout.relative(raw.kv.key.decode())
        value = bytes(raw.kv.value) if kind is EventKind.PUT else b""
        return WatchEvent(kind, key, value, revision)

    async def _probe(self) -> bool:
        """Whether the watch's member still serves linearizable reads (so has a leader)."""
        if self._member is None:
            return False
        client = self._pool.client(self._member)
        try:
            async with asyncio.timeout(self._pool.attempt_timeout_s):
                await client.get(self._probe_key)
        except Exception:  # noqa: BLE001 - any failure means this member is no use now
            return False
        self._failing_since = None
        return True

    async def _fail_over(self, detail: str) -> None:
        """Drop the stream and re-open it on the next member; bounded by the pool's
        ``timeout_s`` since the first failure without an event or a good probe between."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if self._member is not None:
            self._pool.move_on(self._member)
        failed = None if self._member is None else self._pool.endpoints[self._member]
        await self._drop_stream()
        try:
            if now - self._failing_since > self._pool.timeout_s:
                problems = {} if failed is None else {failed: detail}
                raise self._pool.unavailable(problems, "watch found no member that answered")
            await self._open()
            self.reopened += 1
        except StoreError:
            await self.aclose()
            raise

    async def _drop_stream(self) -> None:
        pending, self._pending = self._pending, None
        watch, self._watch = self._watch, None
        self._events = None
        if pending is not None:
            pending.add_done_callback(_retrieve)
            pending.cancel()
        if watch is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), _CANCEL_TIMEOUT_S)

    async def aclose(self) -> None:
        """End the stream; idempotent, from any task of the loop."""
        self._closed = True
        await self._drop_stream()
