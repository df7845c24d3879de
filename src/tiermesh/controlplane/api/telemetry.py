"""What the compiled Envoy configuration tells the agent's metrics, per answer.

The control plane writes these names into routes and the usage access log; the agent's
metrics (:mod:`tiermesh.agents.metrics`) read them back from each access-log entry. Both
sides import them from here, so a rename breaks neither silently.

- **Route metadata** (``filter_metadata[ROUTE_METADATA_NAMESPACE]`` on every chain route
  of several steps): :data:`FIRST_BACKEND_KEY`, the backend of the route's first step (who
  answers when nothing fails), and :data:`FIRST_BYTE_MS_KEY`, the first step's first-byte
  deadline in milliseconds (absent without one). The namespace and first-backend key are
  the control plane's ``names.ROUTE_METADATA`` / ``names.FIRST_BACKEND_KEY`` (a test holds
  them equal; agents may not import the control plane's model).
- **Access-log custom tags** (``common_properties.custom_tags``): :data:`FIRST_BACKEND_TAG`
  and :data:`FIRST_BYTE_MS_TAG` carry the two values above, taken from the route that
  answered.
- **Headers the access log records for the metrics** (besides the tenant, budget, tier
  and cascade-steps headers it records for accounting and answer counts):
  :data:`LOGGED_REQUEST_HEADERS`, :data:`LOGGED_RESPONSE_HEADERS`.
- **Overhead header**: every app route table adds :data:`OVERHEAD_US_HEADER` (Envoy's own
  timing: from the request's first byte to the first byte sent to the answering upstream,
  in microseconds); the usage filter replaces it with :data:`OVERHEAD_HEADER` in
  milliseconds with three decimals (a node without the usage filter sends the
  microseconds as they are). Local replies (ext_authz's denials, a route's 404 or
  503) carry neither: no upstream was asked (measured through Envoy 1.40).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "FIRST_BACKEND_KEY",
    "FIRST_BACKEND_TAG",
    "FIRST_BYTE_MS_KEY",
    "FIRST_BYTE_MS_TAG",
    "LOGGED_REQUEST_HEADERS",
    "LOGGED_RESPONSE_HEADERS",
    "OVERHEAD_HEADER",
    "OVERHEAD_US_HEADER",
    "RESPONSE_MODEL_KEY",
    "ROUTE_METADATA_NAMESPACE",
]

ROUTE_METADATA_NAMESPACE: Final = "tiermesh"
"""Route ``filter_metadata`` namespace of the keys below."""
FIRST_BACKEND_KEY: Final = "first_backend"
"""Route metadata: the backend of the route's first chain step."""
FIRST_BYTE_MS_KEY: Final = "first_byte_ms"
"""Route metadata: the first step's first-byte deadline (per-try timeout), milliseconds."""
FIRST_BACKEND_TAG: Final = "tiermesh.first"
"""Access-log custom tag with the answering route's :data:`FIRST_BACKEND_KEY`."""
FIRST_BYTE_MS_TAG: Final = "tiermesh.first_byte_ms"
"""Access-log custom tag with the answering route's :data:`FIRST_BYTE_MS_KEY`."""
RESPONSE_MODEL_KEY: Final = "response_model"
"""Key in the usage filter's dynamic metadata: the answer's ``model`` field."""
OVERHEAD_HEADER: Final = "x-tiermesh-overhead-ms"
"""Response header: the time tiermesh added before the answering upstream was asked, ms."""
OVERHEAD_US_HEADER: Final = "x-tiermesh-overhead-us"
"""Response header the route table adds (microseconds); the usage filter turns it into
:data:`OVERHEAD_HEADER`."""
LOGGED_REQUEST_HEADERS: Final = ("x-tiermesh-sensitivity", "x-tiermesh-model")
"""Request headers the usage access log records for the metrics (as ext_authz left them)."""
LOGGED_RESPONSE_HEADERS: Final = ("content-type",)
"""Response headers the usage access log records for the metrics (as the client got them)."""
