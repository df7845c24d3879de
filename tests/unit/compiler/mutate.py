"""Decode a snapshot's resources, change them, and build a new snapshot (for verifier tests)."""

from __future__ import annotations

from typing import Any

from tiermesh.controlplane.verify.route_tree import host_routes
from tiermesh.xds import Snapshot, typeurls

Resources = dict[str, dict[str, Any]]


def decode(snapshot: Snapshot) -> Resources:
    """Type URL → name → a fresh, mutable message. A route table dispatched by tenant is
    made one ``routes`` list again (:func:`host_routes`), so tests change one route in
    one place; the verifier reads both shapes the same way."""
    resources = {
        type_url: {name: r.decode() for name, r in snapshot.encoded(type_url).items()}
        for type_url in typeurls.PUSH_ORDER
    }
    for config in resources[typeurls.ROUTE].values():
        for host in config.virtual_hosts:
            if host.HasField("matcher"):
                routes = host_routes(host)
                host.ClearField("matcher")
                host.routes.extend(routes)
    return resources


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
