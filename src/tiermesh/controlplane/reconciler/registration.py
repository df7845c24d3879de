"""Reading node registrations from the store as plan inputs and health reports."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tiermesh.controlplane.api import NodeInfo
from tiermesh.controlplane.store import NodeRecord

__all__ = [
    "InvalidRegistration",
    "Registration",
    "node_from_registration",
    "read_registration",
    "registration_digest",
]

_FIELDS = ("id", "tier", "region", "residency")
_LOAD_FIELDS = ("load", "load_at")
"""What a load report rewrites in a ``RegisteredNode`` (of ``load``, ``healthy`` counts)."""


class InvalidRegistration(ValueError):
    """A registration cannot be read as a node; the node is left out of reconciles."""

    def __init__(self, node_id: str, reason: str) -> None:
        self.node_id = node_id
        self.reason = reason
        super().__init__(f"registration of node {node_id!r} is unusable: {reason}")


@dataclass(frozen=True, slots=True)
class Registration:
    """What the reconciler reads of one registration."""

    node: NodeInfo
    """The node, as a plan input."""
    healthy: bool
    """False when the node's latest load report says ``healthy: false`` (its model server
    fails its health check); True without a report."""


def node_from_registration(record: NodeRecord) -> NodeInfo:
    """The :class:`NodeInfo` a registration describes (see :func:`read_registration`)."""
    return read_registration(record).node


def _healthy(document: dict[str, Any]) -> bool:
    load = document.get("load")
    return not (isinstance(load, dict) and load.get("healthy") is False)


def read_registration(record: NodeRecord) -> Registration:
    """The node a registration describes, and whether it reports itself healthy.

    The registration is a JSON object holding ``id`` (or ``node_id``, as the registry's
    ``RegisteredNode`` spells it), ``tier``, ``region`` and optional ``residency`` — either
    at the top or under ``node`` (a ``PlanInput``) — and optionally ``load`` at the top
    (a ``NodeLoad``, of which only ``healthy`` is read: exactly ``false`` is unhealthy,
    anything else healthy); other fields (endpoints, the rest of the load) are ignored.
    ``id`` defaults to the registration's key and must equal it when given. Raises
    :class:`InvalidRegistration`.
    """
    try:
        document: Any = json.loads(record.registration)
    except ValueError as exc:
        raise InvalidRegistration(record.node_id, f"not JSON: {exc}") from exc
    healthy = _healthy(document) if isinstance(document, dict) else True
    if isinstance(document, dict) and isinstance(document.get("node"), dict):
        document = document["node"]
    if not isinstance(document, dict):
        raise InvalidRegistration(record.node_id, "not a JSON object")
    fields = {key: document[key] for key in _FIELDS if key in document}
    if "id" not in fields and "node_id" in document:
        fields["id"] = document["node_id"]
    fields.setdefault("id", record.node_id)
    if fields["id"] != record.node_id:
        raise InvalidRegistration(
            record.node_id, f"claims id {fields['id']!r} under the key of {record.node_id!r}"
        )
    try:
        return Registration(NodeInfo.model_validate(fields), healthy)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise InvalidRegistration(record.node_id, problems) from exc


def registration_digest(registration: bytes) -> bytes:
    """A digest of everything in ``registration`` that a reconcile can depend on.

    That is the whole document except its load report: ``load`` counts only through the
    healthy flag :func:`read_registration` reads, and ``load_at`` not at all. Two
    registrations of one node with the same digest are read alike by
    :func:`read_registration` and give the compiler the same node settings (the rest of
    the document, ports and endpoints included, is in the digest), so a write that keeps
    the digest — a load report with health unchanged — needs no reconcile. A document
    that is not a JSON object is digested byte for byte. Never raises.
    """
    try:
        document: Any = json.loads(registration)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        return b"raw:" + hashlib.sha256(registration).digest()
    kept = {key: value for key, value in document.items() if key not in _LOAD_FIELDS}
    canonical = json.dumps([kept, _healthy(document)], sort_keys=True, separators=(",", ":"))
    return b"doc:" + hashlib.sha256(canonical.encode()).digest()
