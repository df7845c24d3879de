"""When to renew: an SVID (or a CA intermediate) is rotated once half its lifetime has passed.

Half-life leaves the other half for retries when the CA is briefly unreachable, and matches
what SPIRE agents do. Pure functions, thread-safe.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from spiffe import X509Svid

from tiermesh.controlplane.identity.ca import IssuedSvid

__all__ = ["needs_rotation", "rotation_due_at"]


def _leaf(svid: x509.Certificate | IssuedSvid | X509Svid) -> x509.Certificate:
    if isinstance(svid, IssuedSvid):
        return svid.certificate
    if isinstance(svid, X509Svid):
        return svid.leaf
    return svid


def rotation_due_at(svid: x509.Certificate | IssuedSvid | X509Svid) -> dt.datetime:
    """``not_before + (not_after - not_before) / 2`` of the leaf, in UTC."""
    leaf = _leaf(svid)
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    return start + (end - start) / 2


def needs_rotation(svid: x509.Certificate | IssuedSvid | X509Svid, now: dt.datetime) -> bool:
    """Whether ``now`` (timezone-aware) is at or past the half-life of ``svid``'s leaf.

    Raises:
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now >= rotation_due_at(svid)
