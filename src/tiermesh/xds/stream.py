"""What SotW and delta streams share: request decoding, the node handshake, the event loop.

One stream object serves one gRPC stream and lives on the server's event loop. It merges
two event sources into one queue — requests from the client and "your snapshot changed"
notifications from the cache — and turns each event into zero or more encoded responses.
Raising an :class:`~tiermesh.xds.errors.XdsError` from a handler closes the stream; the
server maps it to a gRPC status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import grpc
from envoy.config.core.v3 import base_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from prometheus_client.metrics import MetricWrapperBase

from tiermesh.xds import typeurls, wire
from tiermesh.xds.ackstate import Verdict
from tiermesh.xds.cache import SnapshotSource
from tiermesh.xds.errors import InvalidRequestError, NodeNotAuthorizedError, UnknownTypeUrlError
from tiermesh.xds.snapshot import SharedBody, Snapshot
from tiermesh.xds.status import (
    ACKS,
    NACKS,
    PUSH_ACK,
    PUSHES,
    STREAMS,
    Callbacks,
    Mode,
    NackRecord,
    StatusRegistry,
)

__all__ = [
    "NodeAuthorizer",
    "ServicerContext",
    "StreamBase",
    "StreamEnv",
    "Undecodable",
    "request_decoder",
]

log = logging.getLogger("tiermesh.xds")

ServicerContext = grpc.aio.ServicerContext[object, bytes]

#: Returns a refusal reason for a node that its peer credentials do not prove, else None.
NodeAuthorizer = Callable[[base_pb2.Node, ServicerContext], str | None]

M = TypeVar("M", bound=Message)


_W = TypeVar("_W", bound=MetricWrapperBase)
_CHILDREN: dict[tuple[int, str, str], MetricWrapperBase] = {}


def _labelled(metric: _W, short: str, mode: Mode) -> _W:
    """``metric.labels(short, mode)``, looked up once: every response and every ACK of
    every stream counts, and ``labels`` takes a lock and builds its key each call."""
    key = (id(metric), short, mode)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(short, mode)
    return child  # type: ignore[return-value]  # the child of a metric is of its class


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request whose bytes did not parse, so the stream can refuse it."""

    error: str


def request_decoder(cls: type[M]) -> Callable[[bytes], M | Undecodable]:
    """A gRPC request deserializer that never raises: garbage becomes :class:`Undecodable`."""

    def decode(data: bytes) -> M | Undecodable:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Undecodable(f"{len(data)} bytes are not a {cls.DESCRIPTOR.name}: {exc}")

    return decode


@dataclass(frozen=True, slots=True)
class StreamEnv:
    """Everything a stream needs from its server; shared by all streams."""

    source: SnapshotSource
    status: StatusRegistry
    callbacks: Callbacks
    authorize: NodeAuthorizer | None


class _Changed:
    pass


class _End:
    pass


_CHANGED = _Changed()
_END = _End()

R = TypeVar("R", bound=Message)


class SentState(Protocol):
    """What a stream keeps per type of what it last sent (:meth:`StreamBase.send`)."""

    sent_nonce: str
    sent_version: str
    shared_serial: int
    """The newest shared body (by serial) the stream sent for the type."""


class StreamBase(Generic[R]):
    """Base of one ADS stream. Subclasses implement ``on_request`` and ``on_change``."""

    mode: Mode

    def __init__(self, env: StreamEnv, context: ServicerContext) -> None:
        self.env = env
        self.context = context
        self.node: base_pb2.Node | None = None
        self.key = ""
        self._nonce = 0
        self._change_pending = False
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._unsubscribe: Callable[[], None] | None = None
        self._sent_at: dict[str, float] = {}
        """Per type: when the response now awaiting its ACK was sent (monotonic)."""

    @property
    def node_id(self) -> str:
        return self.node.id if self.node is not None else ""

    def next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    def send(self, type_url: str, version: str, shared: SharedBody, state: SentState) -> bytes:
        """The response that sends ``shared`` (``version`` of ``type_url``) on this stream,
        with ``state`` (the stream's state for the type) and status, metrics and callbacks
        updated: the shared bytes and nonce the first time the stream sends that body,
        else the body with a nonce of this stream's own.

        A nonce must differ from every nonce this stream sent before for the type (a
        request echoing an old one is stale). Shared nonces are ``s<serial>`` and a body's
        serial is newer than every body encoded before it, so a body newer than the last
        one sent here carries a nonce never sent here; an older or the same body (a
        snapshot served again, a type re-sent) gets ``s<serial>.<counter>``.
        """
        if shared.serial > state.shared_serial:
            nonce, response = shared.nonce, shared.framed
            state.shared_serial = shared.serial
        else:
            nonce = f"{shared.nonce}.{self.next_nonce()}"
            response = shared.body + wire.string_field(5, nonce)
        state.sent_nonce = nonce
        state.sent_version = version
        self.env.status.mark_sent(self.node_id, type_url, version)
        _labelled(PUSHES, typeurls.SHORT_NAMES[type_url], self.mode).inc()
        self._sent_at[type_url] = time.monotonic()
        node_id, names = self.node_id, shared.sent
        self._safely(lambda cb: cb.on_push(node_id, type_url, version, nonce, names))
        return response

    def snapshot(self) -> Snapshot | None:
        return self.env.source.get_snapshot(self.key)

    def on_request(self, request: R) -> list[bytes]:
        raise NotImplementedError

    def on_change(self, snapshot: Snapshot) -> list[bytes]:
        raise NotImplementedError

    async def run(self, requests: AsyncIterator[R | Undecodable]) -> AsyncIterator[bytes]:
        """Serve the stream until the client half-closes; responses are encoded bytes.

        Requests are handled as they are read (most are ACKs that answer nothing, and
        handing each to this loop cost a task switch per ACK); what a request answers and
        every snapshot change reach this loop through one queue, so responses leave in the
        order they were made."""
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, list):  # what a request answered
                    responses: list[bytes] = item
                else:
                    self._change_pending = False
                    snapshot = self.snapshot()
                    responses = self.on_change(snapshot) if snapshot is not None else []
                for response in responses:
                    yield response
        finally:
            reader.cancel()
            self._close()

    async def _read(self, requests: AsyncIterator[R | Undecodable]) -> None:
        try:
            async for request in requests:
                responses = self.on_request(self._accept(request))
                if responses:
                    self._queue.put_nowait(responses)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the serving loop, which re-raises it
            self._queue.put_nowait(exc)
            return
        self._queue.put_nowait(_END)

    def _notify(self) -> None:
        if not self._change_pending:
            self._change_pending = True
            self._queue.put_nowait(_CHANGED)

    def _accept(self, item: object) -> R:
        if isinstance(item, Undecodable):
            raise InvalidRequestError(item.error)
        request: R = item  # type: ignore[assignment]
        node: base_pb2.Node = request.node  # type: ignore[attr-defined]
        if self.node is None:
            self._open(request, node)
        elif node.id and node.id != self.node.id:
            raise InvalidRequestError(
                f"node id changed mid-stream from {self.node.id!r} to {node.id!r}"
            )
        type_url: str = request.type_url  # type: ignore[attr-defined]
        if type_url not in typeurls.PUSH_ORDER:
            raise UnknownTypeUrlError(type_url, typeurls.PUSH_ORDER)
        return request

    def _open(self, request: R, node: base_pb2.Node) -> None:
        if not node.id:
            raise InvalidRequestError("the first request on a stream must carry node.id")
        if self.env.authorize is not None:
            refusal = self.env.authorize(node, self.context)
            if refusal is not None:
                raise NodeNotAuthorizedError(node.id, refusal)
        self.node = base_pb2.Node()
        self.node.CopyFrom(node)
        self.key = self.env.source.node_key(node)
        self._unsubscribe = self.env.source.subscribe(self.key, self._notify)
        self.env.status.stream_opened(node, self.mode)
        STREAMS.labels(self.mode).inc()
        log.info("xds stream opened node=%s key=%s mode=%s", node.id, self.key, self.mode)
        self._safely(lambda cb: cb.on_stream_open(node, self.mode))

    def _close(self) -> None:
        if self._unsubscribe is None or self.node is None:
            return
        self._unsubscribe()
        self._unsubscribe = None
        self.env.status.stream_closed(self.node.id)
        STREAMS.labels(self.mode).dec()
        log.info("xds stream closed node=%s mode=%s", self.node.id, self.mode)
        node = self.node
        self._safely(lambda cb: cb.on_stream_closed(node, self.mode))

    def _safely(self, call: Callable[[Callbacks], None]) -> None:
        try:
            call(self.env.callbacks)
        except Exception:
            log.exception("xds callback failed node=%s", self.node_id)

    def record(
        self,
        type_url: str,
        verdict: Verdict,
        *,
        sent_version: str,
        nonce: str,
        error: status_pb2.Status | None,
        claimed_version: str = "",
    ) -> None:
        """Account one classified request in status, metrics, logs and callbacks."""
        node_id = self.node_id
        short = typeurls.SHORT_NAMES[type_url]
        status = self.env.status
        if verdict is Verdict.INITIAL and claimed_version:
            status.mark_acked(node_id, type_url, claimed_version)
        elif verdict in (Verdict.ACK, Verdict.RESUBSCRIBE):
            status.mark_acked(node_id, type_url, sent_version)
            _labelled(ACKS, short, self.mode).inc()
            if verdict is Verdict.ACK and (sent_at := self._sent_at.pop(type_url, None)):
                _labelled(PUSH_ACK, short, self.mode).observe(time.monotonic() - sent_at)
            self._safely(lambda cb: cb.on_ack(node_id, type_url, sent_version))
        elif verdict is Verdict.NACK:
            assert error is not None
            nack = NackRecord(sent_version, nonce, error.message, error.code, time.time())
            current = status.type_status(node_id, type_url)
            count = current.nack_count if current is not None else 0
            status.update_type(node_id, type_url, nack_count=count + 1, last_nack=nack)
            _labelled(NACKS, short, self.mode).inc()
            self._sent_at.pop(type_url, None)
            log.warning(
                "xds NACK node=%s type=%s version=%s: %s",
                node_id,
                short,
                sent_version,
                error.message,
            )
            self._safely(lambda cb: cb.on_nack(node_id, type_url, nack))
        elif verdict is Verdict.STALE:
            log.debug("xds stale nonce node=%s type=%s nonce=%s", node_id, short, nonce)

    def note_missing(self, type_url: str, missing: frozenset[str]) -> None:
        """Log and record requested names the snapshot lacks (once per change of the set)."""
        if missing != self.env.status.missing(self.node_id, type_url):
            self.env.status.update_type(self.node_id, type_url, missing=missing)
            if missing:
                log.warning(
                    "xds node=%s asked for %s resources its snapshot lacks: %s",
                    self.node_id,
                    typeurls.SHORT_NAMES[type_url],
                    ", ".join(sorted(missing)),
                )
