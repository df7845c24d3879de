"""The node's registry session with the control plane (``tiermesh.controlplane.api``'s
``NodeRegistry/Session``), kept open for the agent's whole life.

:class:`RegistrySession` opens the stream over mTLS with the store's current SVID, sends the
registration, waits for the :class:`SessionReply`, then sends a :class:`NodeLoad` from
``measure`` every ``interval_s``. When the stream breaks (the control plane restarted, the
network dropped) it reopens it at once on the next address (one per control-plane
replica), then with exponential backoff, trying the addresses in order, and registers
again; the backoff starts over after every session that registered. :meth:`goodbye` ends
the session gracefully: the control plane revokes the lease and the registration
disappears at once.

Usage: with a ``usage`` outbox (the node's
:class:`~tiermesh.agents.usage.UsageLedger`) and a control plane whose reply says
``usage_reports``, each session first re-sends the outbox's unacknowledged reports, then
sends one new report after each load report when there is something to send, and one last
one before goodbye. Every acknowledgement read from the stream goes to the outbox. An
older control plane (no ``usage_reports``) gets no reports; they stay in the outbox.

Bundles: every reply that names the served bundle (``SessionReply.bundle``; the control
plane sends one unasked when it changes) goes to ``on_bundle``, the node's
:class:`~tiermesh.agents.runtime.policy_sync.PolicySync`, which fetches it if it is new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

import grpc

from tiermesh.agents.identity import Backoff, SvidStore
from tiermesh.controlplane.api import (
    BundleRef,
    NodeLoad,
    NodeRegistration,
    SessionMessage,
    SessionReply,
    UsageAck,
    UsageReport,
    registry_method_path,
)

__all__ = ["LoadProbe", "RegistrySession", "UsageOutbox"]


SESSION_KEEPALIVE: Final = (
    ("grpc.keepalive_time_ms", 1_000),
    ("grpc.keepalive_timeout_ms", 2_000),
    ("grpc.http2.ping_timeout_ms", 2_000),
    ("grpc.http2.max_pings_without_data", 0),
)
"""HTTP/2 PINGs on the registry session: a replica that stops answering (paused,
partitioned, its host frozen) is left within 3 s, about when the node's registration
lease (5 s in ``tiermesh up``, refreshed every third of it) could first run out on it, and
the session registers again on another replica at once. Writes alone cannot tell: a
frozen server's socket takes load reports until its window is full. ``ping_timeout_ms``
is what bounds the wait for a PING's ACK in grpcio (1.85): ``keepalive_timeout_ms`` alone
leaves gRPC core's 60 s default in force, and the node stayed unregistered until the
frozen replica woke up. Two seconds of patience leave a busy replica room (ACKs come from
gRPC core's threads, not the replica's interpreter). The node API server accepts pings
this often."""

log = logging.getLogger("tiermesh.agent")

LoadProbe = Callable[[], Awaitable[NodeLoad]]
"""Measures the node's load now; must not raise."""

_GOODBYE_TIMEOUT_S = 3.0


class UsageOutbox(Protocol):
    """Where usage reports come from and their acknowledgements go (``UsageLedger``).
    ``next_report`` and ``unacknowledged`` are called on the session's event loop,
    ``acknowledge`` in a worker thread (it writes a file): implementations must be
    thread-safe."""

    def next_report(self, *, answers: bool = False) -> UsageReport | None:
        """A new report to send now, kept until acknowledged; None: nothing to send.
        ``answers``: the control plane takes answer counts (``answer_reports``); called
        with it only then."""
        ...

    def unacknowledged(self) -> Sequence[UsageReport]:
        """Reports sent before and not acknowledged, oldest first."""
        ...

    def acknowledge(self, ack: UsageAck, /) -> bool:
        """Take an acknowledgement. May raise (logged; the session goes on)."""
        ...


def _encode(message: SessionMessage) -> bytes:
    return message.model_dump_json().encode()


class RegistrySession:
    """One long-lived registration; see the module docstring.

    Task safety: one event loop. :meth:`run` is one task (cancel it to stop without goodbye);
    :meth:`wait_registered` returns once a reply was received; :meth:`goodbye` stops
    :meth:`run` after telling the control plane.
    """

    def __init__(
        self,
        store: SvidStore,
        registration: NodeRegistration,
        *,
        addresses: Sequence[str],
        server_name: str,
        measure: LoadProbe,
        interval_s: float = 1.0,
        backoff: Backoff | None = None,
        usage: UsageOutbox | None = None,
        on_bundle: Callable[[BundleRef], None] | None = None,
    ) -> None:
        self._store = store
        self._registration = registration
        self._addresses = tuple(addresses)
        self._server_name = server_name
        self._measure = measure
        self._interval_s = interval_s
        self._backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self._usage = usage
        self._on_bundle = on_bundle
        self._registered = asyncio.Event()
        self._leaving = asyncio.Event()
        self._call: Any = None
        self.reply: SessionReply | None = None
        """The latest reply (None before the first registration was accepted)."""
        self.sessions = 0
        """How many sessions were opened and accepted (1 + reconnects)."""
        self.last_error: str | None = None

    async def wait_registered(self, timeout_s: float) -> SessionReply:
        """The first reply. Raises ``TimeoutError`` (with :attr:`last_error` to name why)."""
        async with asyncio.timeout(timeout_s):
            await self._registered.wait()
        assert self.reply is not None
        return self.reply

    async def run(self) -> None:
        """Hold the session open until :meth:`goodbye` (or cancellation)."""
        failures = 0
        index = 0
        while not self._leaving.is_set():
            address = self._addresses[index % len(self._addresses)]
            sessions = self.sessions
            try:
                await self._session(address)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means "reconnect"
                if self.sessions > sessions:
                    failures = 0  # it had registered: this is a new outage, not a longer one
                failures += 1
                index += 1
                self.last_error = f"{address}: {_describe(exc)}"
                if self._leaving.is_set():
                    return
                delay = self.reopen_delay(failures)
                log.warning("registry session lost (%s); reopening in %.1fs", self.last_error,
                            delay)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._leaving.wait()

    def reopen_delay(self, failures: int) -> float:
        """Seconds before the next attempt after ``failures`` failed ones in a row (the
        count restarts when a session had registered): with several addresses the first
        retry goes to the next one at once, since the node's registration lives only one
        lease TTL without a session; then the backoff."""
        if failures == 1 and len(self._addresses) > 1:
            return 0.0
        return self._backoff.delay(failures - 1 if len(self._addresses) > 1 else failures)

    async def _session(self, address: str) -> None:
        material = self._store.require()
        credentials = grpc.ssl_channel_credentials(
            material.bundle_pem(), material.key_pem(), material.chain_pem()
        )
        options = [("grpc.ssl_target_name_override", self._server_name), *SESSION_KEEPALIVE]
        async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
            method = channel.stream_stream(
                registry_method_path(),
                request_serializer=_encode,
                response_deserializer=SessionReply.model_validate_json,
            )
            call = method()  # type: ignore[call-arg]
            self._call = call
            try:
                await call.write(SessionMessage(registration=self._registration))
                reply = await call.read()
                if not isinstance(reply, SessionReply):
                    raise ConnectionError("the control plane closed the session at once")
                self.reply = reply
                self.sessions += 1
                self.last_error = None
                self._registered.set()
                log.info("registered as %s (lease %ds)", reply.spiffe_id, reply.lease_ttl_s)
                self._bundle(reply)
                usage = self._usage if reply.usage_reports else None
                reader = asyncio.create_task(self._drain_replies(call))
                try:
                    if usage is not None:
                        for report in usage.unacknowledged():
                            await call.write(SessionMessage(usage=report))
                    while not self._leaving.is_set():
                        if reader.done():
                            reader.result()
                            raise ConnectionError("the control plane ended the session")
                        await call.write(SessionMessage(load=await self._measure()))
                        await self._report_usage(call, usage)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(self._interval_s):
                                await self._leaving.wait()
                    await self._report_usage(call, usage)
                    await self._say_goodbye(call, reader)
                finally:
                    if not reader.done():
                        reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                        await reader
            finally:
                self._call = None
                call.cancel()

    async def _report_usage(self, call: Any, usage: UsageOutbox | None) -> None:
        report = None
        if usage is not None:
            takes_answers = self.reply is not None and self.reply.answer_reports
            report = usage.next_report(answers=True) if takes_answers else usage.next_report()
        if report is not None:
            await call.write(SessionMessage(usage=report))

    async def _drain_replies(self, call: Any) -> None:
        while True:
            reply = await call.read()
            if not isinstance(reply, SessionReply):
                return  # end of stream
            self._bundle(reply)
            if reply.usage is None:
                self.reply = reply
            elif self._usage is not None:
                try:
                    await asyncio.to_thread(self._usage.acknowledge, reply.usage)
                except Exception as exc:  # noqa: BLE001 - accounting never ends the session
                    log.warning("usage acknowledgement not applied: %s", exc)

    def _bundle(self, reply: SessionReply) -> None:
        if reply.bundle is not None and self._on_bundle is not None:
            try:
                self._on_bundle(reply.bundle)
            except Exception as exc:  # noqa: BLE001 - a policy update never ends the session
                log.warning("bundle announcement not taken: %s", exc)

    async def _say_goodbye(self, call: Any, reader: asyncio.Task[None]) -> None:
        """Send goodbye, half-close, and wait for the server to end the stream (it revokes
        the lease first). The reply reader keeps running, so reading never races."""
        try:
            async with asyncio.timeout(_GOODBYE_TIMEOUT_S):
                await call.write(SessionMessage(goodbye=True))
                await call.done_writing()
                await asyncio.shield(reader)
            log.info("said goodbye; registration removed")
        except (TimeoutError, grpc.aio.AioRpcError, grpc.aio.UsageError) as exc:
            log.warning("goodbye not confirmed (%s); the lease will expire", _describe(exc))

    def leave(self) -> None:
        """Ask :meth:`run` to say goodbye and return."""
        self._leaving.set()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
