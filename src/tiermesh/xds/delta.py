"""Incremental ADS streams (``DeltaAggregatedResources``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from tiermesh.xds import typeurls
from tiermesh.xds.ackstate import Verdict, classify
from tiermesh.xds.snapshot import EncodedResource, Snapshot
from tiermesh.xds.stream import ServicerContext, StreamBase, StreamEnv

__all__ = ["DeltaStream"]


@dataclass(slots=True)
class _TypeState:
    wildcard: bool
    names: set[str] = field(default_factory=set)
    known: dict[str, str] = field(default_factory=dict)
    """What the client holds: name → version (from ``initial_resource_versions``, then
    updated as responses are sent)."""
    sent_nonce: str = ""
    sent_version: str = ""
    shared_serial: int = 0

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


class DeltaStream(StreamBase[discovery_pb2.DeltaDiscoveryRequest]):
    """One incremental stream: responses carry only resources the client lacks or holds in
    another version, and the names of subscribed resources that are gone.

    Subscription changes apply whatever the nonce says (they are deltas and would otherwise
    be lost). A subscribed name the snapshot lacks is reported once in
    ``removed_resources``, so the client stops waiting for it.
    """

    mode = "delta"

    def __init__(self, env: StreamEnv, context: ServicerContext) -> None:
        super().__init__(env, context)
        self._types: dict[str, _TypeState] = {}
        self._forced: set[str] = set()

    def _rewarm_dependents(self, type_url: str, sent: list[EncodedResource]) -> None:
        """A re-sent cluster (listener) is rebuilt by Envoy and warms until its endpoints
        (routes) arrive again: forget that the client holds them, so they are re-sent."""
        dependent = typeurls.DEPENDENT_TYPES.get(type_url)
        state = self._types.get(dependent) if dependent else None
        if dependent is None or state is None:
            return
        for resource in sent:
            for ref_type, ref_name in resource.refs:
                if ref_type == dependent and state.known.pop(ref_name, None) is not None:
                    self._forced.add(dependent)

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> list[bytes]:
        type_url = request.type_url
        subscribe = set(request.resource_names_subscribe)
        unsubscribe = set(request.resource_names_unsubscribe)
        state = self._types.get(type_url)
        if state is None:
            implicit = not subscribe and type_url in typeurls.WILDCARD_TYPES
            state = self._types[type_url] = _TypeState(wildcard=implicit or "*" in subscribe)
            state.known.update(request.initial_resource_versions)
        decision = classify(
            sent_nonce=state.sent_nonce,
            response_nonce=request.response_nonce,
            has_error=request.HasField("error_detail"),
            names_changed=bool(subscribe or unsubscribe),
            incremental=True,
        )
        self.record(
            type_url,
            decision.verdict,
            sent_version=state.sent_version,
            nonce=request.response_nonce,
            error=request.error_detail if request.HasField("error_detail") else None,
        )
        if "*" in subscribe:
            state.wildcard = True
        if "*" in unsubscribe:
            state.wildcard = False
        state.names |= subscribe - {"*"}
        state.names -= unsubscribe
        for name in unsubscribe:
            state.known.pop(name, None)
        snapshot = self.snapshot()
        if not decision.respond or snapshot is None:
            return []
        absent = {n for n in subscribe - {"*"} if n not in snapshot.encoded(type_url)}
        self._forced.clear()
        response = self._diff(snapshot, type_url, state, report_absent=absent)
        if response is None and decision.verdict is Verdict.INITIAL:
            response = self._encode(snapshot, type_url, state, [], [])
        out = [response] if response is not None else []
        dependent = typeurls.DEPENDENT_TYPES.get(type_url)
        dependent_state = self._types.get(dependent) if dependent else None
        if dependent in self._forced and dependent_state is not None:
            follow = self._diff(snapshot, dependent, dependent_state, report_absent=set())
            if follow is not None:
                out.append(follow)
        return out

    def on_change(self, snapshot: Snapshot) -> list[bytes]:
        out = []
        self._forced.clear()
        for type_url in typeurls.PUSH_ORDER:
            state = self._types.get(type_url)
            if state is None:
                continue
            if type_url in self._forced or snapshot.type_version(type_url) != state.sent_version:
                response = self._diff(snapshot, type_url, state, report_absent=set())
                if response is not None:
                    out.append(response)
        return out

    def _diff(
        self, snapshot: Snapshot, type_url: str, state: _TypeState, *, report_absent: set[str]
    ) -> bytes | None:
        current = snapshot.encoded(type_url)
        updated = [
            name
            for name, resource in current.items()
            if state.wants(name) and state.known.get(name) != resource.version
        ]
        removed = sorted(
            {n for n in state.known if n not in current and state.wants(n)} | report_absent
        )
        if report_absent:
            self.note_missing(type_url, frozenset(report_absent))
        if not updated and not removed:
            return None
        return self._encode(snapshot, type_url, state, updated, removed)

    def _encode(
        self,
        snapshot: Snapshot,
        type_url: str,
        state: _TypeState,
        updated: list[str],
        removed: list[str],
    ) -> bytes:
        current = snapshot.encoded(type_url)
        version = snapshot.type_version(type_url)
        for name in updated:
            state.known[name] = current[name].version
        self._rewarm_dependents(type_url, [current[name] for name in updated])
        for name in removed:
            state.known.pop(name, None)
        shared = snapshot.delta_body(type_url, tuple(updated), tuple(removed))
        return self.send(type_url, version, shared, state)
