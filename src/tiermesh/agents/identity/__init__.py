"""The agent's identity: its SVID, how it stays fresh, and who it is handed to.

- :class:`SvidStore` holds the current :class:`SvidMaterial` (key, chain, bundle) and tells
  subscribers about every change; :class:`SvidFiles` mirrors it to owner-only files.
- :class:`SvidRotator` renews at half-life through an :class:`SvidSource` (the join client),
  with a new local key each time and backoff on failure; :class:`SpireSource` follows a SPIRE
  agent instead.
- :class:`WorkloadApiServer` serves the SPIFFE Workload API on a unix socket;
  :class:`LocalSdsServer` serves the SVID and bundle to the node's Envoy over SDS, and
  ``sds_bootstrap`` renders the Envoy configuration that fetches them.

Private keys are generated here and never leave the node: only CSRs go to the control
plane. Every error derives from :class:`AgentIdentityError`.
"""

from __future__ import annotations

from tiermesh.agents.identity.errors import (
    AgentIdentityError,
    NoSvidError,
    SocketPathError,
    SpiffeIdChangedError,
    SpireSourceError,
    SvidRejectedError,
)
from tiermesh.agents.identity.files import SvidFiles
from tiermesh.agents.identity.keys import build_csr, generate_key
from tiermesh.agents.identity.material import PrivateKey, SvidMaterial, load_material
from tiermesh.agents.identity.rotation import Backoff, SvidRotator, SvidSource
from tiermesh.agents.identity.sds import (
    BUNDLE_SDS_NAME,
    SVID_SDS_NAME,
    LocalSdsServer,
    SdsNames,
    sds_secrets,
    tls_certificate_secret,
    validation_context_secret,
)
from tiermesh.agents.identity.sds_bootstrap import (
    SDS_CLUSTER,
    downstream_tls_socket,
    sds_cluster,
    sds_config_source,
    sds_secret_config,
    upstream_tls_socket,
    with_sds_cluster,
)
from tiermesh.agents.identity.spire_source import SpireSource
from tiermesh.agents.identity.svid_store import SvidStore
from tiermesh.agents.identity.workload_api import WORKLOAD_API_HEADER, WorkloadApiServer

__all__ = [
    "BUNDLE_SDS_NAME",
    "SDS_CLUSTER",
    "SVID_SDS_NAME",
    "WORKLOAD_API_HEADER",
    "AgentIdentityError",
    "Backoff",
    "LocalSdsServer",
    "NoSvidError",
    "PrivateKey",
    "SdsNames",
    "SocketPathError",
    "SpiffeIdChangedError",
    "SpireSource",
    "SpireSourceError",
    "SvidFiles",
    "SvidMaterial",
    "SvidRejectedError",
    "SvidRotator",
    "SvidSource",
    "SvidStore",
    "WorkloadApiServer",
    "build_csr",
    "downstream_tls_socket",
    "generate_key",
    "load_material",
    "sds_cluster",
    "sds_config_source",
    "sds_secret_config",
    "sds_secrets",
    "tls_certificate_secret",
    "upstream_tls_socket",
    "validation_context_secret",
    "with_sds_cluster",
]
