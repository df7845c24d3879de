"""State-of-the-world ADS streams (``StreamAggregatedResources``)."""

from __future__ import annotations

from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2

from tiermesh.xds import typeurls
from tiermesh.xds.ackstate import Verdict, classify
from tiermesh.xds.snapshot import Snapshot
from tiermesh.xds.stream import ServicerContext, StreamBase, StreamEnv

__all__ = ["SotwStream"]


@dataclass(slots=True)
class _TypeState:
    names: frozenset[str] | None
    """None: a wildcard subscription (every resource of the type)."""
    sent_nonce: str = ""
    sent_version: str = ""
    shared_serial: int = 0


def requested_names(type_url: str, names: list[str]) -> frozenset[str] | None:
    """SotW subscription semantics: ``*`` or, for CDS/LDS, an empty list mean wildcard."""
    if "*" in names or (not names and type_url in typeurls.WILDCARD_TYPES):
        return None
    return frozenset(names)


class SotwStream(StreamBase[discovery_pb2.DiscoveryRequest]):
    """One SotW stream: every response carries the full set of subscribed resources.

    Per type it keeps the subscription, the last nonce and version sent. A type is pushed
    only after the client asked for it, and again whenever the snapshot's version for that
    type differs from the version last sent — so a NACKed version is never re-sent.
    """

    mode = "sotw"

    def __init__(self, env: StreamEnv, context: ServicerContext) -> None:
        super().__init__(env, context)
        self._types: dict[str, _TypeState] = {}

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> list[bytes]:
        type_url = request.type_url
        names = requested_names(type_url, list(request.resource_names))
        state = self._types.get(type_url)
        if state is None:
            state = self._types[type_url] = _TypeState(names)
        decision = classify(
            sent_nonce=state.sent_nonce,
            response_nonce=request.response_nonce,
            has_error=request.HasField("error_detail"),
            names_changed=names != state.names,
        )
        self.record(
            type_url,
            decision.verdict,
            sent_version=state.sent_version,
            nonce=request.response_nonce,
            error=request.error_detail if request.HasField("error_detail") else None,
            claimed_version=request.version_info,
        )
        if decision.verdict is Verdict.STALE:
            return []
        state.names = names
        snapshot = self.snapshot()
        if not decision.respond or snapshot is None:
            return []
        out = [self._push(snapshot, type_url, state)]
        dependent = typeurls.DEPENDENT_TYPES.get(type_url)
        dependent_state = self._types.get(dependent) if dependent else None
        if dependent is not None and dependent_state is not None and dependent_state.sent_nonce:
            out.append(self._push(snapshot, dependent, dependent_state))
        return out

    def on_change(self, snapshot: Snapshot) -> list[bytes]:
        out: list[bytes] = []
        forced: set[str] = set()
        for type_url in typeurls.PUSH_ORDER:
            state = self._types.get(type_url)
            if state is None:
                continue
            if type_url in forced or snapshot.type_version(type_url) != state.sent_version:
                out.append(self._push(snapshot, type_url, state))
                dependent = typeurls.DEPENDENT_TYPES.get(type_url)
                if dependent is not None:
                    forced.add(dependent)
        return out

    def _push(self, snapshot: Snapshot, type_url: str, state: _TypeState) -> bytes:
        shared = snapshot.sotw_body(type_url, state.names)
        if state.names is not None:
            self.note_missing(type_url, shared.missing)
        return self.send(type_url, snapshot.type_version(type_url), shared, state)
