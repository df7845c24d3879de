"""The API surface a mesh routes: which paths and methods reach a model server.

Only requests for these (method, path) pairs are routed; any other path or method is
answered 404/405 by the node's Envoy and never leaves the node, and a cloud backend's
API key is injected only on these paths. The default is the OpenAI-compatible surface
(:data:`OPENAI_API`); the catalog's ``api`` list replaces it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tiermesh.controlplane.api._base import Contract

__all__ = ["BATCH_API", "BATCH_ID_PATTERN", "OPENAI_API", "ApiEndpoint", "HttpMethod"]

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class ApiEndpoint(Contract):
    """One routed path (exact, without query string) and the methods it accepts."""

    path: str = Field(pattern=r"^/[A-Za-z0-9._/-]{1,200}$")
    """Exact request path, e.g. ``/v1/chat/completions``; letters, digits and ``._/-``."""
    methods: tuple[HttpMethod, ...] = Field(default=("POST",), min_length=1)
    """HTTP methods routed on this path."""


OPENAI_API: tuple[ApiEndpoint, ...] = (
    ApiEndpoint(path="/v1/chat/completions"),
    ApiEndpoint(path="/v1/completions"),
    ApiEndpoint(path="/v1/embeddings"),
    ApiEndpoint(path="/v1/responses"),
    ApiEndpoint(path="/v1/models", methods=("GET",)),
)
"""The OpenAI-compatible surface every backend serves: chat completions, completions,
embeddings, responses and the model list."""

BATCH_ID_PATTERN = r"[A-Za-z0-9_-]+"
"""What ``{id}`` in a :data:`BATCH_API` path stands for (file and batch ids)."""

BATCH_API: tuple[tuple[HttpMethod, str], ...] = (
    ("POST", "/v1/files"),
    ("GET", "/v1/files/{id}"),
    ("GET", "/v1/files/{id}/content"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches/{id}"),
    ("POST", "/v1/batches/{id}/cancel"),
)
"""The OpenAI Batch API, as (method, path) with ``{id}`` standing for
:data:`BATCH_ID_PATTERN` (file and batch ids). Served only by the node's own batch
service, on nodes that run one, never by a backend: these paths are not part of
:data:`OPENAI_API` (nor of a catalog's ``api``), so no backend route or provider key
ever sees them."""
