"""The one pure function that decides what a discovery request means and whether to answer.

Shaped after istio's ``ShouldRespond``: everything it needs is passed in, nothing is
mutated, and it is tested as a table (``tests/unit/xds/test_ackstate.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Decision", "Verdict", "classify"]


class Verdict(enum.Enum):
    INITIAL = "initial"
    """No response nonce: a new subscription, or a reconnect that states its known version."""
    ACK = "ack"
    """The latest response was accepted and the subscription is unchanged."""
    NACK = "nack"
    """The latest response was rejected (``error_detail`` set)."""
    STALE = "stale"
    """The nonce is not the latest one sent: the client has not seen the newest response."""
    RESUBSCRIBE = "resubscribe"
    """The latest response was accepted and the requested names changed."""


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    respond: bool


def classify(
    *,
    sent_nonce: str,
    response_nonce: str,
    has_error: bool,
    names_changed: bool,
    incremental: bool = False,
) -> Decision:
    """Classify one request against the last nonce sent for its type on this stream.

    A NACK is never answered by re-sending the same config: the server waits for a new
    version, unless the same request also changed the subscription. In state-of-the-world
    mode a stale request is ignored whole (the client will ask again after reading the
    newest response); in incremental mode subscription changes are deltas that would be
    lost, so a stale request that changes names is answered.
    """
    if not response_nonce:
        return Decision(Verdict.INITIAL, respond=True)
    if response_nonce != sent_nonce:
        return Decision(Verdict.STALE, respond=incremental and names_changed)
    if has_error:
        return Decision(Verdict.NACK, respond=names_changed)
    if names_changed:
        return Decision(Verdict.RESUBSCRIBE, respond=True)
    return Decision(Verdict.ACK, respond=False)
