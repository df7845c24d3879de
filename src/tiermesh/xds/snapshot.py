"""Immutable, versioned, self-consistent sets of xDS resources for one node (or node group).

A snapshot stores every resource in its encoded form only, so nothing can mutate it after
construction. Versions are content hashes: rebuilding identical resources yields identical
versions, and the server pushes nothing for them.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from tiermesh.xds import typeurls, wire
from tiermesh.xds.errors import InconsistentSnapshotError, UnknownTypeUrlError
from tiermesh.xds.resources import MESSAGE_CLASSES, Reference, references, resource_name

__all__ = ["DELTA_BODIES", "DELTA_BODY_BYTES", "EncodedResource", "SharedBody", "Snapshot"]

_VERSION_CHARS = 16


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "big"))
        h.update(chunk)
    return h.hexdigest()[:_VERSION_CHARS]


@dataclass(frozen=True, slots=True)
class EncodedResource:
    """One resource, encoded once.

    ``any_bytes`` is a serialized ``google.protobuf.Any``; ``delta_bytes`` a serialized
    ``envoy.service.discovery.v3.Resource`` (name, version, resource) for incremental xDS.
    """

    type_url: str
    name: str
    version: str
    any_bytes: bytes
    delta_bytes: bytes
    refs: tuple[Reference, ...] = ()
    """ADS-served resources this one depends on: (type URL, name)."""

    @classmethod
    def encode(cls, type_url: str, message: Message) -> EncodedResource:
        payload = message.SerializeToString(deterministic=True)
        name = resource_name(type_url, message)
        version = _digest(payload)
        any_bytes = wire.string_field(1, type_url) + wire.bytes_field(2, payload)
        delta_bytes = (
            wire.string_field(1, version)
            + wire.bytes_field(2, any_bytes)
            + wire.string_field(3, name)
        )
        refs = tuple(references(type_url, message))
        return cls(type_url, name, version, any_bytes, delta_bytes, refs)

    def decode(self) -> Message:
        """A fresh message equal to the stored resource (the caller owns it)."""
        message = MESSAGE_CLASSES[self.type_url]()
        message.ParseFromString(any_pb2.Any.FromString(self.any_bytes).value)
        return message


DELTA_BODIES = 64
"""Incremental responses a snapshot keeps for sharing (streams in another state than
their class's get one of their own)..."""

DELTA_BODY_BYTES = 64 * 1024 * 1024
"""...and the most bytes they may hold together (a 16 000-route table is 10 MB)."""

_BODY_SERIALS = itertools.count(1)
"""Serial numbers of encoded response bodies, process-wide: each names one body's shared
nonce."""


@dataclass(frozen=True, slots=True)
class SharedBody:
    """One response of a snapshot, as every stream that needs it sends it, nonce included.

    ``framed`` is the whole encoded response: for SotW (:meth:`Snapshot.sotw_body`) a
    ``DiscoveryResponse`` (version, resources in name order, type URL, one
    ``ResourceError`` NOT_FOUND per subscribed name the snapshot lacks), for incremental
    xDS (:meth:`Snapshot.delta_body`) a ``DeltaDiscoveryResponse``; then the nonce
    ``nonce``. That nonce is shared by every stream that sends this body, so a stream
    sends ``framed`` as it is instead of copying the body to append a nonce of its own
    (at 5,000 nodes that copy was 160 KB per node per push). ``serial`` orders bodies by
    when they were encoded: a stream may send the shared nonce only the first time it
    sends the body (see ``StreamBase.send``); otherwise it appends its own nonce to
    ``body``. ``sent`` names the resources the body carries, ``missing`` those it reports
    absent (SotW) or removed (incremental).
    """

    framed: bytes
    body_end: int
    """``framed[:body_end]`` is the body without the nonce field."""
    serial: int
    nonce: str
    """``s<serial>``, the nonce ``framed`` ends with."""
    sent: tuple[str, ...]
    missing: frozenset[str]

    @property
    def body(self) -> bytes:
        return self.framed[: self.body_end]

    @classmethod
    def frame(cls, body: bytes, sent: tuple[str, ...], missing: frozenset[str]) -> SharedBody:
        serial = next(_BODY_SERIALS)
        nonce = f"s{serial}"
        return cls(body + wire.string_field(5, nonce), len(body), serial, nonce, sent, missing)


@dataclass(frozen=True, slots=True)
class _TypeSet:
    version: str
    items: Mapping[str, EncodedResource]
    names: frozenset[str]
    ordered: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A complete, consistent configuration: every resource of every served type.

    Build one with :meth:`build`, which raises :class:`InconsistentSnapshotError` when a
    resource references an EDS/RDS/SDS name the snapshot lacks. Instances are immutable and
    safe to share between any number of streams and tasks; the only mutable part is a
    memo of encoded SotW response bodies, filled on first use within one event loop.
    """

    _types: Mapping[str, _TypeSet]
    version: str
    _bodies: dict[tuple[str, frozenset[str] | None], SharedBody] = field(
        default_factory=dict, repr=False
    )
    _deltas: dict[tuple[str, tuple[str, ...], tuple[str, ...]], SharedBody] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def build(
        cls,
        *,
        clusters: Iterable[Message] = (),
        endpoints: Iterable[Message] = (),
        listeners: Iterable[Message] = (),
        routes: Iterable[Message] = (),
        secrets: Iterable[Message] = (),
    ) -> Snapshot:
        return cls.from_resources(
            {
                typeurls.CLUSTER: clusters,
                typeurls.ENDPOINT: endpoints,
                typeurls.LISTENER: listeners,
                typeurls.ROUTE: routes,
                typeurls.SECRET: secrets,
            }
        )

    @classmethod
    def from_resources(cls, resources: Mapping[str, Iterable[Message]]) -> Snapshot:
        """Encode, version and check ``resources`` (type URL → messages).

        Raises ``ValueError`` for two resources of one type with the same name or a message
        of the wrong class, :class:`UnknownTypeUrlError` for a type URL not served, and
        :class:`InconsistentSnapshotError` for dangling references.
        """
        types: dict[str, _TypeSet] = {}
        dangling: list[tuple[str, str, str, str]] = []
        wanted: list[tuple[str, str, str, str]] = []
        for type_url in typeurls.PUSH_ORDER:
            items: dict[str, EncodedResource] = {}
            for message in resources.get(type_url, ()):
                expected = MESSAGE_CLASSES[type_url]
                if not isinstance(message, expected):
                    raise ValueError(
                        f"{type(message).__name__} given where {expected.__name__} belongs"
                    )
                encoded = EncodedResource.encode(type_url, message)
                if encoded.name in items:
                    kind = typeurls.SHORT_NAMES[type_url]
                    raise ValueError(f"two {kind} resources are named {encoded.name!r}")
                items[encoded.name] = encoded
                wanted.extend(
                    (type_url, encoded.name, ref_type, ref_name)
                    for ref_type, ref_name in encoded.refs
                )
            ordered = dict(sorted(items.items()))
            version = _digest(*(f"{n}={r.version}".encode() for n, r in ordered.items()))
            types[type_url] = _TypeSet(
                version, MappingProxyType(ordered), frozenset(ordered), tuple(ordered)
            )
        for unknown in set(resources) - set(typeurls.PUSH_ORDER):
            raise UnknownTypeUrlError(unknown, typeurls.PUSH_ORDER)
        for type_url, name, ref_type, ref_name in wanted:
            if ref_name not in types[ref_type].items:
                short = typeurls.SHORT_NAMES
                dangling.append((short[type_url], name, short[ref_type], ref_name))
        if dangling:
            raise InconsistentSnapshotError(dangling)
        overall = _digest(*(types[t].version.encode() for t in typeurls.PUSH_ORDER))
        return cls(MappingProxyType(types), overall)

    def type_version(self, type_url: str) -> str:
        """Content hash of every resource of ``type_url`` (an empty set has a version too)."""
        return self._types[type_url].version

    def names(self, type_url: str) -> frozenset[str]:
        return self._types[type_url].names

    def ordered_names(self, type_url: str) -> tuple[str, ...]:
        """The names of ``type_url``'s resources, sorted."""
        return self._types[type_url].ordered

    def encoded(self, type_url: str) -> Mapping[str, EncodedResource]:
        """Read-only view of the encoded resources of ``type_url`` by name."""
        return self._types[type_url].items

    def resource(self, type_url: str, name: str) -> Message:
        """A decoded copy of one resource; ``KeyError`` if absent."""
        return self._types[type_url].items[name].decode()

    def sotw_body(self, type_url: str, names: frozenset[str] | None) -> SharedBody:
        """The SotW response for a subscription to ``names`` of ``type_url`` (None: every
        resource, a wildcard subscription), encoded once per snapshot and subscription and
        shared by every stream that asks for it, nonce included (see :class:`SharedBody`)."""
        key = (type_url, names)
        body = self._bodies.get(key)
        if body is None:
            type_set = self._types[type_url]
            if names is None:
                sent = type_set.ordered
                missing: frozenset[str] = frozenset()
            else:
                sent = tuple(sorted(names & type_set.names))
                missing = names - type_set.names
            body = SharedBody.frame(
                wire.string_field(1, type_set.version)
                + b"".join(wire.bytes_field(2, type_set.items[n].any_bytes) for n in sent)
                + wire.string_field(4, type_url)
                + b"".join(wire.bytes_field(7, _not_found(name)) for name in sorted(missing)),
                sent,
                missing,
            )
            self._bodies[key] = body
        return body

    def delta_body(
        self, type_url: str, updated: tuple[str, ...], removed: tuple[str, ...]
    ) -> SharedBody:
        """The incremental response carrying the resources ``updated`` (names of this
        snapshot's ``type_url``, in that order) and the names ``removed``, nonce
        included (see :class:`SharedBody`): encoded once per snapshot and pair of name
        lists for the streams that need the same one (the members of a node class after
        a push), up to :data:`DELTA_BODIES` pairs and :data:`DELTA_BODY_BYTES` per
        snapshot; beyond them each is encoded for its stream alone."""
        key = (type_url, updated, removed)
        body = self._deltas.get(key)
        if body is None:
            type_set = self._types[type_url]
            body = SharedBody.frame(
                b"".join(
                    [
                        wire.string_field(1, type_set.version),
                        *(wire.bytes_field(2, type_set.items[n].delta_bytes) for n in updated),
                        wire.string_field(4, type_url),
                        *(wire.string_field(6, name) for name in removed),
                    ]
                ),
                updated,
                frozenset(removed),
            )
            held = sum(len(kept.framed) for kept in self._deltas.values())
            if len(self._deltas) < DELTA_BODIES and held + len(body.framed) <= DELTA_BODY_BYTES:
                self._deltas[key] = body
        return body


def _not_found(name: str) -> bytes:
    """An encoded ``ResourceError`` saying that resource ``name`` does not exist."""
    error = discovery_pb2.ResourceError(
        resource_name=discovery_pb2.ResourceName(name=name),
        error_detail=status_pb2.Status(
            code=code_pb2.NOT_FOUND, message=f"resource {name!r} does not exist"
        ),
    )
    return bytes(error.SerializeToString())
