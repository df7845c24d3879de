"""The edge table: which error becomes which gRPC status."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from tiermesh.controlplane.identity import (
    CaExpiredError,
    CsrIdentityMismatchError,
    CsrRequestsCaError,
    CsrSignatureError,
    CsrTooLargeError,
    MalformedCsrError,
    SvidExpiredError,
    UntrustedChainError,
)
from tiermesh.controlplane.identity.tokens import MalformedToken, TokenExpired, TokenReusedOrUnknown
from tiermesh.controlplane.nodeapi import PeerNotAuthenticated, UndecodableRequest, status_for
from tiermesh.controlplane.store import StoreUnavailable

T = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UndecodableRequest("Join", "bad json"), Code.INVALID_ARGUMENT),
        (MalformedCsrError("x"), Code.INVALID_ARGUMENT),
        (CsrTooLargeError(20000, 16384), Code.INVALID_ARGUMENT),
        (CsrSignatureError(), Code.INVALID_ARGUMENT),
        (CsrIdentityMismatchError("URI:x", "y"), Code.PERMISSION_DENIED),
        (CsrRequestsCaError("CA=true"), Code.PERMISSION_DENIED),
        (TokenReusedOrUnknown(), Code.UNAUTHENTICATED),
        (TokenExpired("edge-1", T), Code.UNAUTHENTICATED),
        (MalformedToken(), Code.UNAUTHENTICATED),
        (PeerNotAuthenticated("none"), Code.UNAUTHENTICATED),
        (SvidExpiredError(T, T), Code.UNAUTHENTICATED),
        (UntrustedChainError("foreign"), Code.UNAUTHENTICATED),
        (CaExpiredError(T, T), Code.FAILED_PRECONDITION),
    ],
)
def test_errors_map_to_codes_with_their_message(error: Exception, code: grpc.StatusCode) -> None:
    assert status_for(error) == (code, str(error))


def test_unexpected_errors_are_internal_without_detail() -> None:
    assert status_for(KeyError("secret detail")) == (Code.INTERNAL, "internal error")


def test_store_outages_are_unavailable_without_the_endpoint() -> None:
    code, message = status_for(StoreUnavailable("10.0.0.5:2379", "refused"))
    assert code is Code.UNAVAILABLE
    assert "10.0.0.5" not in message
