"""Per-node xDS state (connected, versions sent and ACKed per type, NACKs) and callbacks.

The server writes; anyone on the server's event loop reads. Readers get frozen copies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class _TypeState:
    """The registry's own, mutable record of one type (readers get a :class:`TypeStatus`)."""

    sent_version: str = ""
    acked_version: str = ""
    nack_count: int = 0
    last_nack: NackRecord | None = None
    missing: frozenset[str] = frozenset()

    def frozen(self) -> TypeStatus:
        return TypeStatus(
            self.sent_version, self.acked_version, self.nack_count, self.last_nack, self.missing
        )


@dataclass(slots=True)
class _NodeState:
    node_id: str
    cluster: str
    mode: Mode
    streams: int
    last_change: float
    types: dict[str, _TypeState] = field(default_factory=dict)

    def frozen(self) -> NodeStatus:
        types = {type_url: state.frozen() for type_url, state in self.types.items()}
        return NodeStatus(
            self.node_id, self.cluster, self.mode, self.streams, self.last_change, types
        )


_TYPE_FIELDS = frozenset(TypeStatus.__dataclass_fields__)


class StatusRegistry:
    """Latest known xDS state of every node that ever connected to this server.

    Not thread-safe; used from the server's event loop. Status outlives streams so an
    operator can see a node that disconnected and what it last ACKed. Readers
    (:meth:`get`, :meth:`all`) get frozen copies that later updates leave as they are;
    updates change the registry's own records in place (every response and every ACK
    of every stream updates one, so an update must not copy a node's state).
    """

    def __init__(self) -> None:
        self._nodes: dict[str, _NodeState] = {}

    def get(self, node_id: str) -> NodeStatus | None:
        state = self._nodes.get(node_id)
        return state.frozen() if state is not None else None

    def all(self) -> list[NodeStatus]:
        return [self._nodes[k].frozen() for k in sorted(self._nodes)]

    def type_status(self, node_id: str, type_url: str) -> TypeStatus | None:
        """``node_id``'s status of ``type_url`` (None: the node or the type is unknown)."""
        node = self._nodes.get(node_id)
        state = node.types.get(type_url) if node is not None else None
        return state.frozen() if state is not None else None

    def missing(self, node_id: str, type_url: str) -> frozenset[str] | None:
        """The names last recorded missing for ``node_id``'s ``type_url`` (None: never
        recorded); cheaper than :meth:`type_status` (no copy)."""
        node = self._nodes.get(node_id)
        state = node.types.get(type_url) if node is not None else None
        return state.missing if state is not None else None

    def stream_opened(self, node: base_pb2.Node, mode: Mode) -> None:
        old = self._nodes.get(node.id)
        streams = (old.streams if old else 0) + 1
        if streams == 1:
            NODES.inc()
        types = old.types if old else {}
        self._nodes[node.id] = _NodeState(node.id, node.cluster, mode, streams, time.time(), types)

    def stream_closed(self, node_id: str) -> None:
        state = self._nodes[node_id]
        if state.streams == 1:
            NODES.dec()
        state.streams -= 1
        state.last_change = time.time()

    def update_type(self, node_id: str, type_url: str, **changes: object) -> None:
        """Set fields of ``node_id``'s :class:`TypeStatus` for ``type_url`` (``KeyError``
        for a node that never opened a stream, ``TypeError`` for an unknown field)."""
        unknown = changes.keys() - _TYPE_FIELDS
        if unknown:
            raise TypeError(f"TypeStatus has no field {sorted(unknown)[0]!r}")
        node = self._nodes[node_id]
        state = node.types.get(type_url)
        if state is None:
            state = node.types[type_url] = _TypeState()
        for name, value in changes.items():
            setattr(state, name, value)
        node.last_change = time.time()
