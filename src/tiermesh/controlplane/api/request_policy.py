"""The request policy a node fetches from the control plane: what its ext_authz decides with.

Method :data:`REQUEST_POLICY_METHOD` of the registry service
(``tiermesh.node.v1.NodeRegistry``, see :mod:`tiermesh.controlplane.api.registry`), unary,
served on the control plane's mTLS *node* port: the node sends a
:class:`RequestPolicyQuery` and gets the :class:`RequestPolicyBundle` of the bundle the
control plane serves (the one whose compiled routes its nodes get). Messages are these
models as UTF-8 JSON, like the rest of the node API. Added within ``v1``: a control plane
older than the method answers UNIMPLEMENTED.

When to fetch: at start, and whenever a :class:`~tiermesh.controlplane.api.SessionReply`
on the node's registry session announces a ``bundle`` (:class:`BundleRef`) other than the
one the node holds. The control plane sends such a reply, unasked, each time the served
bundle changes; every other reply repeats the latest announcement.

What is in it: only what the request policy needs — the bundle's ``request/*.rego``
modules (``*_test.rego`` left out; the node loads them with ``data.catalog`` and its own
``data.request_config``), the catalog (``data/catalog.yaml``, validated) and the bundle's
identity. Bounded: at most :data:`MAX_REQUEST_MODULES` modules and
:data:`MAX_REQUEST_POLICY_BYTES` bytes encoded; the control plane refuses a bigger one.

Status codes: UNAUTHENTICATED (no verified node SVID), INVALID_ARGUMENT (undecodable
query), NOT_FOUND (the control plane serves no bundle yet, or its bundle has no request
policy), FAILED_PRECONDITION (the bundle's request policy is over the bounds), UNAVAILABLE.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints

from tiermesh.controlplane.api._base import Contract
from tiermesh.controlplane.api.catalog import Catalog

__all__ = [
    "MAX_REQUEST_MODULES",
    "MAX_REQUEST_POLICY_BYTES",
    "REQUEST_POLICY_FOLDER",
    "REQUEST_POLICY_METHOD",
    "BundleRef",
    "RequestPolicyBundle",
    "RequestPolicyQuery",
]

REQUEST_POLICY_METHOD: Final = "RequestPolicy"
"""Method name on the registry service: the served bundle's request policy (unary)."""

REQUEST_POLICY_FOLDER: Final = "request/"
"""Bundle folder holding the request policy's modules (files directly in it)."""

MAX_REQUEST_MODULES: Final = 64
"""Most modules one request policy may have."""

MAX_REQUEST_POLICY_BYTES: Final = 1 << 20
"""Largest encoded :class:`RequestPolicyBundle` (1 MiB); also the node's receive limit."""

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ProvenanceValue = str | int | float | bool | None


class BundleRef(Contract):
    """Names one pushed bundle. Two refs with equal ``sha256`` name the same content."""

    revision: int = Field(ge=1)
    """Bundle revision: 1 for the first push, one more per push."""
    sha256: Sha256Hex
    """The bundle's digest (hex; the store's digest of every file, in path order). Decision
    records of both policy levels carry it as ``bundle_revision``."""
    etcd_revision: int = Field(ge=0)
    """The store revision the control plane first read this bundle at; decision records
    carry it as ``etcd_revision``."""


class RequestPolicyQuery(Contract):
    """A node asking for the served bundle's request policy. The node is the client SVID."""

    version: Literal["v1"] = "v1"
    """Format version."""


class RequestPolicyBundle(Contract):
    """The served bundle's request policy."""

    version: Literal["v1"] = "v1"
    """Format version."""
    bundle: BundleRef
    """The bundle these modules and this catalog come from."""
    provenance: dict[str, ProvenanceValue] = Field(default_factory=dict, max_length=64)
    """Where the bundle came from, as pushed (git commit, author, dirty flag, pusher)."""
    modules: dict[
        Annotated[str, StringConstraints(pattern=r"^request/[^/]+\.rego$", max_length=255)],
        str,
    ] = Field(min_length=1, max_length=MAX_REQUEST_MODULES)
    """Bundle path (``request/<file>.rego``) -> Rego source; the names the node loads them
    under, so engine errors name the bundle file."""
    catalog: Catalog | None = None
    """The bundle's ``data/catalog.yaml``, validated: the policy's ``data.catalog`` (as
    ``model_dump(mode="json")``, what the compile-time policy sees) and the node's prices
    and budgets for usage accounting. None only if the bundle's catalog is unreadable (the
    control plane serves no such bundle)."""
