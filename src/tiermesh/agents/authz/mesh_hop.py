"""Requests from another node: the rules of a mesh-hop decision.

A check is a mesh hop when Envoy sent it from the node-to-node inbound mTLS listener,
whose configuration (never the client) marks it
(:data:`~tiermesh.controlplane.api.MESH_HOP_CONTEXT`); the server reads the mark and the
verified peer identity (the client certificate's URI SAN, ``attributes.source.principal``)
into :attr:`~tiermesh.agents.authz.decide.CheckInput.hop` and ``peer``. What changes for
such a request (:meth:`~tiermesh.agents.authz.decide.Authorizer.decide`):

- **The caller is the peer node.** Its SPIFFE ID is recorded as ``input.peer.spiffe_id``;
  a mesh hop without a well-formed SPIFFE ID (which the listener's handshake makes
  impossible) is denied 403 and recorded, without asking the policy.
- **The tenant is the one the sending node set.** Its own ext_authz authenticated the app
  and wrote ``x-tiermesh-tenant``; here that header is trusted as it stands (on the app
  listener it never is: a key's tenant overwrites it). No tenant key is asked for, and
  credential headers (``authorization``, ``x-api-key``) are dropped before inspection and
  removed from the request: they never reach the model server.
- **Everything else is as on any request.** The privacy floor (path, headers, body), the
  request policy and a durable record on this node's chain; the peer's own labels are
  only the caller's declared labels (a forged ``public`` on personal data is raised to
  ``restricted`` by the floor; a local model may still answer it, and the record says
  so). The headers the server owns (``x-tiermesh-sensitivity``, ``x-tiermesh-budget``,
  ``x-tiermesh-decision-id``) are set or removed as on any request, so the peer's values
  never survive; the sending node's decision id is kept in the record as
  ``input.peer.decision_id`` only when it is a UUID (a link between the two nodes'
  records, not an identity).
- **A peer's health check is a probe.** Envoy's active health checks carry no tenant, so
  the request policy would refuse them and every caller would count this node down. The
  mesh listener's probe routes (``GET`` of exactly a health-check path a caller's plan
  names) mark their checks as probes; a probe is allowed in code, without the policy, when
  it is a ``GET`` with no body and no query (anything else on a probe route is denied
  403), and recorded like any decision (``input.peer.probe``, ``result.probe``; its
  ``policy_answer`` is null, so ``tiermesh audit replay`` does not compare it).
- **Nothing is charged here.** The sending node's app listener accounts the answer's
  tokens; the mesh listener has no usage filter or access log (see
  :mod:`tiermesh.controlplane.generators.mesh_tls`).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from tiermesh.agents.authz.credentials import CREDENTIAL_HEADERS

if TYPE_CHECKING:
    from tiermesh.agents.authz.decide import CheckInput

__all__ = [
    "MAX_PEER_ID",
    "peer_document",
    "peer_problem",
    "probe_decision",
    "probe_problem",
    "without_credentials",
]

MAX_PEER_ID: Final = 2048
"""Longest SPIFFE ID accepted as a peer (the SPIFFE URI limit)."""
_SPIFFE_ID: Final = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+")


def peer_problem(peer: str) -> str | None:
    """Why ``peer`` (the check's source principal) is not a usable SPIFFE ID, or None."""
    if not peer:
        return "mesh hop without a verified peer identity"
    if len(peer) > MAX_PEER_ID or _SPIFFE_ID.fullmatch(peer) is None:
        return "mesh hop whose peer identity is not a SPIFFE ID"
    return None


def peer_document(peer: str, headers: Mapping[str, str], decision_header: str) -> dict[str, str]:
    """``input.peer``: the peer's SPIFFE ID, and the sending node's decision id when the
    request carries one that parses as a UUID (anything else is left out)."""
    document = {"spiffe_id": peer}
    sent = headers.get(decision_header, "")
    if 0 < len(sent) <= 64:
        with contextlib.suppress(ValueError):
            document["decision_id"] = str(uuid.UUID(sent))
    return document


def without_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` without the tenant credential headers (lowercase names)."""
    return {name: value for name, value in headers.items() if name not in CREDENTIAL_HEADERS}


def probe_problem(request: CheckInput) -> str | None:
    """Why a check on a probe route is not a health probe (``GET``, no body, no query)."""
    if request.method != "GET" or request.body or "?" in request.path:
        return "a probe route takes only a GET without body or query"
    return None


def probe_decision() -> dict[str, Any]:
    """The decision a health probe is answered with (the floor still labels it)."""
    return {
        "allow": True,
        "sensitivity": "restricted",
        "budget_exhausted": False,
        "reason": "health probe of a mesh peer",
        "headers": {},
        "probe": True,
    }
