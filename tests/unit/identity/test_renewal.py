"""Half-life renewal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tiermesh.controlplane.identity import (
    LocalCertificateAuthority,
    needs_rotation,
    rotation_due_at,
)

if TYPE_CHECKING:
    from conftest import FakeClock


def test_rotation_at_half_life(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    half = svid.not_before + (svid.not_after - svid.not_before) / 2
    assert rotation_due_at(svid) == half
    assert not needs_rotation(svid, clock.now)
    assert not needs_rotation(svid, half - dt.timedelta(seconds=1))
    assert needs_rotation(svid, half)
    assert needs_rotation(svid.certificate, half)
    assert needs_rotation(svid, svid.not_after + dt.timedelta(hours=1))


def test_intermediate_rotation_hint(ca: LocalCertificateAuthority, clock: FakeClock) -> None:
    assert not needs_rotation(ca.active.intermediate, clock.now)
    assert needs_rotation(ca.active.intermediate, clock.now + dt.timedelta(days=91))


def test_naive_now_is_refused(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    with pytest.raises(ValueError, match="timezone"):
        needs_rotation(svid, dt.datetime(2026, 3, 1))
