"""Per-node xDS state (connected, versions sent and ACKed per type, NACKs) and callbacks.

The server writes; anyone on the server's event loop reads. Readers get frozen copies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from envoy.config.core.v3 import base_pb2
from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "Callbacks",
    "NackRecord",
    "NodeStatus",
    "StatusRegistry",
    "TypeStatus",
]

Mode = Literal["sotw", "delta"]

PUSHES = Counter("tiermesh_xds_pushes", "Discovery responses sent", ["type", "mode"])
ACKS = Counter("tiermesh_xds_acks", "Discovery responses ACKed", ["type", "mode"])
NACKS = Counter("tiermesh_xds_nacks", "Discovery responses NACKed", ["type", "mode"])
REJECTED = Counter("tiermesh_xds_rejected_requests", "Requests that closed a stream", ["reason"])
STREAMS = Gauge("tiermesh_xds_connected_streams", "Open ADS streams", ["mode"])
NODES = Gauge("tiermesh_xds_connected_nodes", "Nodes with at least one open ADS stream")
PUSH_ACK = Histogram(
    "tiermesh_xds_push_ack",
    "A response sent to the client's ACK of it",
    ["type", "mode"],
    unit="seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


@dataclass(frozen=True, slots=True)
class NackRecord:
    version: str
    nonce: str
    message: str
    code: int
    at: float


@dataclass(frozen=True, slots=True)
class TypeStatus:
    sent_version: str = ""
    acked_version: str = ""
    nack_count: int = 0
    last_nack: NackRecord | None = None
    missing: frozenset[str] = frozenset()
    """Names the client asked for that its snapshot lacks."""


@dataclass(slots=True)
class _TypeRecord:
    """What the registry keeps of one type of one node: updated in place on every response
    and every ACK (a frozen :class:`TypeStatus` rebuilt per update cost ~5 µs each, a few
    percent of a fan-out), copied out frozen for readers."""

    sent_version: str = ""
    acked_version: str = ""
    nack_count: int = 0
    last_nack: NackRecord | None = None
    missing: frozenset[str] = frozenset()

    def frozen(self) -> TypeStatus:
        return TypeStatus(
            sent_version=self.sent_version,
            acked_version=self.acked_version,
            nack_count=self.nack_count,
            last_nack=self.last_nack,
            missing=self.missing,
        )


_FIELDS = frozenset(TypeStatus.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    cluster: str
    mode: Mode
    streams: int
    last_change: float
    types: dict[str, TypeStatus] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return self.streams > 0


class Callbacks:
    """Stream lifecycle hooks; subclass and override what you need.

    Called on the server's event loop; they must not block. An exception raised by a
    callback is logged and does not affect the stream.
    """

    def on_stream_open(self, node: base_pb2.Node, mode: Mode) -> None:
        """A stream's first request arrived with ``node``."""

    def on_stream_closed(self, node: base_pb2.Node, mode: Mode) -> None:
        """A stream ended, for whatever reason."""

    def on_push(
        self, node_id: str, type_url: str, version: str, nonce: str, names: Sequence[str]
    ) -> None:
        """A response carrying the resources ``names`` was queued to the client."""

    def on_ack(self, node_id: str, type_url: str, version: str) -> None:
        """The client accepted ``version``."""

    def on_nack(self, node_id: str, type_url: str, nack: NackRecord) -> None:
        """The client rejected a response; it keeps serving its last good config."""


class StatusRegistry:
    """Latest known xDS state of every node that ever connected to this server.

    Not thread-safe; used from the server's event loop. Status outlives streams so an
    operator can see a node that disconnected and what it last ACKed. Readers
    (:meth:`get`, :meth:`all`) get frozen copies that later updates leave as they are.
    Every response and every ACK of every stream updates one type of one node, in place;
    readers copy.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, NodeStatus] = {}
        """The node's status as of its latest stream open or close (``types`` unused)."""
        self._types: dict[str, dict[str, _TypeRecord]] = {}
        self._changed: dict[str, float] = {}

    def get(self, node_id: str) -> NodeStatus | None:
        node = self._nodes.get(node_id)
        if node is None:
            return None
        types = {t: record.frozen() for t, record in self._types[node_id].items()}
        return replace(node, types=types, last_change=self._changed[node_id])

    def all(self) -> list[NodeStatus]:
        return [status for k in sorted(self._nodes) if (status := self.get(k)) is not None]

    def type_status(self, node_id: str, type_url: str) -> TypeStatus | None:
        """``node_id``'s status of ``type_url`` (None: the node or the type is unknown)."""
        record = self._types.get(node_id, {}).get(type_url)
        return record.frozen() if record is not None else None

    def missing(self, node_id: str, type_url: str) -> frozenset[str] | None:
        """The names last recorded missing for ``node_id``'s ``type_url`` (None: never
        recorded)."""
        record = self._types.get(node_id, {}).get(type_url)
        return record.missing if record is not None else None

    def stream_opened(self, node: base_pb2.Node, mode: Mode) -> None:
        old = self._nodes.get(node.id)
        streams = (old.streams if old else 0) + 1
        if streams == 1:
            NODES.inc()
        now = time.time()
        self._nodes[node.id] = NodeStatus(node.id, node.cluster, mode, streams, now)
        self._types.setdefault(node.id, {})
        self._changed[node.id] = now

    def stream_closed(self, node_id: str) -> None:
        old = self._nodes[node_id]
        if old.streams == 1:
            NODES.dec()
        now = time.time()
        self._nodes[node_id] = replace(old, streams=old.streams - 1, last_change=now)
        self._changed[node_id] = now

    def update_type(self, node_id: str, type_url: str, **changes: object) -> TypeStatus:
        """Set fields of ``node_id``'s :class:`TypeStatus` for ``type_url``; the new one
        (``KeyError`` for a node that never opened a stream, ``TypeError`` for an unknown
        field)."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"TypeStatus has no field {', '.join(sorted(unknown))}")
        record = self._record(node_id, type_url)
        for name, value in changes.items():
            setattr(record, name, value)
        return record.frozen()

    def mark_sent(self, node_id: str, type_url: str, version: str) -> None:
        """``update_type(node_id, type_url, sent_version=version)`` without the copy: every
        response of every stream calls it."""
        self._record(node_id, type_url).sent_version = version

    def mark_acked(self, node_id: str, type_url: str, version: str) -> None:
        """``update_type(node_id, type_url, acked_version=version)`` without the copy:
        every ACK of every stream calls it."""
        self._record(node_id, type_url).acked_version = version

    def _record(self, node_id: str, type_url: str) -> _TypeRecord:
        types = self._types[node_id]
        record = types.get(type_url)
        if record is None:
            record = types[type_url] = _TypeRecord()
        self._changed[node_id] = time.time()
        return record
