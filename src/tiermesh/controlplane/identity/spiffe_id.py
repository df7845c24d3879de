"""Trust domain and node id rules, and the SPIFFE ID / DNS name a node is given.

Both rules are deliberately narrower than the SPIFFE spec so that every identity also has
an unambiguous DNS form (grpcio's TLS client checks a DNS name):

- a trust domain is a lowercase DNS name: labels of ``a-z 0-9 -`` (no leading/trailing
  ``-``), 1..63 characters each, at most 180 characters in all (SPIFFE also allows ``_``);
- a node id is one lowercase DNS label: ``a-z 0-9 -``, 1..63 characters, no leading or
  trailing ``-``. Node ids are never case-folded or rewritten, so two distinct node ids
  never share a SPIFFE ID or a DNS name.

A node's SPIFFE ID is ``spiffe://<trust-domain>/node/<node-id>``; its DNS SAN is
``<node-id>.node.<trust-domain>``. Everything here is pure and thread-safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tiermesh.controlplane.identity.errors import InvalidNodeIdError, InvalidTrustDomainError

__all__ = [
    "NODE_ID_RULE",
    "NodeIdentity",
    "parse_node_spiffe_id",
    "trust_domain_id",
    "validate_node_id",
    "validate_trust_domain",
]

NODE_ID_RULE = "1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_TRUST_DOMAIN = 180
_SCHEME = "spiffe://"
_NODE_PATH = "/node/"


def validate_node_id(node_id: str) -> str:
    """Return ``node_id`` unchanged if it follows :data:`NODE_ID_RULE`.

    Raises:
        InvalidNodeIdError: naming the broken rule.
    """
    if not node_id:
        raise InvalidNodeIdError(node_id, "empty")
    if len(node_id) > 63:
        raise InvalidNodeIdError(node_id, f"{len(node_id)} characters; at most 63")
    if _LABEL.fullmatch(node_id) is None:
        raise InvalidNodeIdError(node_id, NODE_ID_RULE)
    return node_id


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` unchanged if it is a lowercase DNS name (see module doc).

    Raises:
        InvalidTrustDomainError: naming the broken rule.
    """
    if not trust_domain:
        raise InvalidTrustDomainError(trust_domain, "empty")
    if len(trust_domain) > _MAX_TRUST_DOMAIN:
        raise InvalidTrustDomainError(
            trust_domain, f"{len(trust_domain)} characters; at most {_MAX_TRUST_DOMAIN}"
        )
    for label in trust_domain.split("."):
        if _LABEL.fullmatch(label) is None:
            raise InvalidTrustDomainError(
                trust_domain,
                f"label {label!r} is not 1-63 characters of a-z, 0-9 and '-' "
                "(not starting or ending with '-')",
            )
    return trust_domain


def trust_domain_id(trust_domain: str) -> str:
    """The SPIFFE ID of the trust domain itself (``spiffe://<td>``), carried by CA certs."""
    return _SCHEME + validate_trust_domain(trust_domain)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A validated (trust domain, node id) pair and the names derived from it.

    Construction validates both parts and raises :class:`InvalidTrustDomainError` or
    :class:`InvalidNodeIdError`. Immutable and hashable.
    """

    trust_domain: str
    node_id: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        validate_node_id(self.node_id)

    @property
    def spiffe_id(self) -> str:
        """``spiffe://<trust-domain>/node/<node-id>``."""
        return f"{_SCHEME}{self.trust_domain}{_NODE_PATH}{self.node_id}"

    @property
    def dns_name(self) -> str:
        """``<node-id>.node.<trust-domain>``: at most 63 + 6 + 180 = 249 characters."""
        return f"{self.node_id}.node.{self.trust_domain}"


def parse_node_spiffe_id(spiffe_id: str, trust_domain: str) -> str | None:
    """The node id in ``spiffe_id`` if it is a node ID of ``trust_domain``, else ``None``.

    Returns ``None`` for IDs of other trust domains, other paths, or node ids that break
    :data:`NODE_ID_RULE`; never raises for any string input.
    """
    prefix = f"{_SCHEME}{trust_domain}{_NODE_PATH}"
    if not spiffe_id.startswith(prefix):
        return None
    node_id = spiffe_id[len(prefix) :]
    if _LABEL.fullmatch(node_id) is None:
        return None
    return node_id
