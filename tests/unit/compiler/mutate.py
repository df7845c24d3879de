"""Decode a snapshot's resources, change them, and build a new snapshot (for verifier tests)."""

from __future__ import annotations

from typing import Any

from tiermesh.xds import Snapshot, typeurls

Resources = dict[str, dict[str, Any]]


def decode(snapshot: Snapshot) -> Resources:
    """Type URL → name → a fresh, mutable message."""
    return {
        type_url: {name: r.decode() for name, r in snapshot.encoded(type_url).items()}
        for type_url in typeurls.PUSH_ORDER
    }


def rebuild(resources: Resources) -> Snapshot:
    return Snapshot.from_resources({t: list(items.values()) for t, items in resources.items()})


def route(resources: Resources, name: str) -> Any:
    """The Envoy route called ``name`` in the app route table (mutable)."""
    for config in resources[typeurls.ROUTE].values():
        for host in config.virtual_hosts:
            for candidate in host.routes:
                if candidate.name == name:
                    return candidate
    raise KeyError(name)
