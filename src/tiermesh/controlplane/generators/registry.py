"""The generator registry: one pure function per xDS type URL, and the snapshot compiler."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from google.protobuf.message import Message

from tiermesh.controlplane.generators import clusters, endpoints, listeners, routes, secrets
from tiermesh.controlplane.model import MeshModel
from tiermesh.xds import Snapshot, typeurls

__all__ = ["GENERATORS", "Generator", "compile_snapshot"]

Generator = Callable[[MeshModel, str], list[Message]]
"""``(model, node_id) -> resources``: pure, deterministic, never mutates the model."""

GENERATORS: Mapping[str, Generator] = MappingProxyType(
    {
        typeurls.CLUSTER: clusters.generate,
        typeurls.ENDPOINT: endpoints.generate,
        typeurls.LISTENER: listeners.generate,
        typeurls.ROUTE: routes.generate,
        typeurls.SECRET: secrets.generate,
    }
)
"""Every served type URL and the generator of its resources."""


def compile_snapshot(model: MeshModel, node_id: str) -> Snapshot:
    """The complete snapshot of ``node_id``: every generator's output, checked for consistency.

    Raises :class:`~tiermesh.controlplane.model.UnknownNode` for a node the model lacks and
    :class:`~tiermesh.xds.InconsistentSnapshotError` if generators disagree on names (a bug).
    Same model content → same ``Snapshot.version``.
    """
    return Snapshot.from_resources(
        {type_url: generate(model, node_id) for type_url, generate in GENERATORS.items()}
    )
