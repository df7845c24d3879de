"""Where Envoy's ``jwt_authn`` filter leaves its verdict for the node's ext_authz server.

The compiler configures one ``jwt_authn`` provider per catalog JWT issuer
(:class:`~tiermesh.controlplane.api.JwtIssuer`, provider name = issuer name) and ext_authz
to send that filter's dynamic metadata (:data:`JWT_METADATA_NAMESPACE`) with each check.
In it, for issuer ``<name>``:

- ``payload/<name>`` (:data:`JWT_PAYLOAD_PREFIX`): the claims of a token the issuer's
  provider verified (signature, ``iss``, ``aud``, ``exp``/``nbf``);
- ``failure/<name>`` (:data:`JWT_FAILURE_PREFIX`): ``{"code": "<n>", "message": "<text>"}``,
  why that provider refused the token (every provider but the token issuer's says
  ``Jwt issuer is not configured``: :data:`UNKNOWN_ISSUER_MESSAGE`).

No entry, or only :data:`MISSING_MESSAGE` refusals: the request carried no
``authorization: Bearer`` token. Envoy refuses a token without ``exp`` with the message of
a bad signature (``Jwt verification fails``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "JWT_FAILURE_PREFIX",
    "JWT_METADATA_NAMESPACE",
    "JWT_PAYLOAD_PREFIX",
    "MISSING_MESSAGE",
    "UNKNOWN_ISSUER_MESSAGE",
]

JWT_METADATA_NAMESPACE: Final = "envoy.filters.http.jwt_authn"
"""The dynamic-metadata namespace (and HTTP filter name) of Envoy's JWT filter."""
JWT_PAYLOAD_PREFIX: Final = "payload/"
"""Key prefix of a verified token's claims; the issuer's catalog name follows."""
JWT_FAILURE_PREFIX: Final = "failure/"
"""Key prefix of a provider's refusal; the issuer's catalog name follows."""
UNKNOWN_ISSUER_MESSAGE: Final = "Jwt issuer is not configured"
"""Envoy's refusal of a token whose ``iss`` is not the provider's issuer."""
MISSING_MESSAGE: Final = "Jwt is missing"
"""Envoy's refusal when the request carries no token at all."""
