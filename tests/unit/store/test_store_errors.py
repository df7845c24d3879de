"""Errors carry structured arguments and format their own messages."""

from __future__ import annotations

import pytest

from tiermesh.controlplane.store import (
    BundleConflict,
    BundleTooLarge,
    BundleTooManyFiles,
    ContentionExhausted,
    InvalidKey,
    KeyExists,
    LeaseExpired,
    StoreError,
    StoreRequestFailed,
    StoreUnavailable,
    WatchCompacted,
)


@pytest.mark.parametrize(
    ("error", "fragments"),
    [
        (StoreUnavailable("127.0.0.1:2379", "refused"), ["127.0.0.1:2379", "refused"]),
        (BundleConflict(3, 5), ["revision 3", "revision 5"]),
        (
            BundleTooLarge(2_000_000, 1_572_864, "data/x.json", 1_999_000),
            ["1572864", "data/x.json"],
        ),
        (BundleTooManyFiles(200, 128), ["200", "128", "--max-txn-ops"]),
        (KeyExists("tokens/a"), ["tokens/a"]),
        (InvalidKey("a//b", "empty segment"), ["a//b", "empty segment"]),
        (LeaseExpired(0xABC, "edge-1"), ["0xabc", "edge-1"]),
        (WatchCompacted(10, 42), ["10", "42"]),
        (ContentionExhausted("/t/usage/a", 100), ["/t/usage/a", "100"]),
        (StoreRequestFailed("put", "boom"), ["put", "boom"]),
    ],
)
def test_every_error_is_a_store_error_with_a_self_formatted_message(
    error: StoreError, fragments: list[str]
) -> None:
    assert isinstance(error, StoreError)
    for fragment in fragments:
        assert fragment in str(error)
