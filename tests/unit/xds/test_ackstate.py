"""The ACK/NACK decision as a table."""

from __future__ import annotations

import pytest

from tiermesh.xds import Verdict, classify

# sent_nonce, response_nonce, has_error, names_changed, incremental → verdict, respond
TABLE = [
    ("", "", False, False, False, Verdict.INITIAL, True),
    ("3", "", False, False, False, Verdict.INITIAL, True),  # reconnect-style request
    ("3", "", True, True, True, Verdict.INITIAL, True),
    ("3", "3", False, False, False, Verdict.ACK, False),
    ("3", "3", False, False, True, Verdict.ACK, False),
    ("3", "3", True, False, False, Verdict.NACK, False),
    ("3", "3", True, False, True, Verdict.NACK, False),
    ("3", "3", True, True, False, Verdict.NACK, True),
    ("3", "3", False, True, False, Verdict.RESUBSCRIBE, True),
    ("3", "3", False, True, True, Verdict.RESUBSCRIBE, True),
    ("3", "2", False, False, False, Verdict.STALE, False),
    ("3", "2", False, True, False, Verdict.STALE, False),
    ("3", "2", True, False, False, Verdict.STALE, False),
    ("3", "2", False, True, True, Verdict.STALE, True),
    ("3", "2", False, False, True, Verdict.STALE, False),
    ("", "7", False, False, False, Verdict.STALE, False),  # nonce we never sent
]


@pytest.mark.parametrize(
    ("sent", "got", "error", "changed", "incremental", "verdict", "respond"), TABLE
)
def test_classify(
    sent: str,
    got: str,
    error: bool,
    changed: bool,
    incremental: bool,
    verdict: Verdict,
    respond: bool,
) -> None:
    decision = classify(
        sent_nonce=sent,
        response_nonce=got,
        has_error=error,
        names_changed=changed,
        incremental=incremental,
    )
    assert (decision.verdict, decision.respond) == (verdict, respond)
