"""Errors raised while building or reading a :class:`~tiermesh.controlplane.model.MeshModel`."""

from __future__ import annotations

__all__ = ["ModelError", "PlanMismatch", "UnknownNode"]


class ModelError(Exception):
    """Root of every error the mesh model raises on purpose."""


class UnknownNode(ModelError):
    """The model holds no plan for ``node_id``."""

    def __init__(self, node_id: str, known: tuple[str, ...]) -> None:
        self.node_id = node_id
        self.known = known
        super().__init__(f"no plan for node {node_id!r} (known: {', '.join(known) or 'none'})")


class PlanMismatch(ModelError):
    """A plan cannot be compiled as given: ``detail`` says what is wrong with ``node_id``'s."""

    def __init__(self, node_id: str, detail: str) -> None:
        self.node_id = node_id
        self.detail = detail
        super().__init__(f"plan of node {node_id!r}: {detail}")
