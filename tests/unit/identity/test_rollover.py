"""CA rollover: overlap, new signer, and retiring the old root."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tiermesh.controlplane.identity import (
    LocalCertificateAuthority,
    RootInUseError,
    SvidExpiredError,
    UnknownGenerationError,
    UntrustedChainError,
    verify_svid,
)

if TYPE_CHECKING:
    from conftest import FakeClock


def test_rollover_overlap_and_retire(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    old_gen = ca.active
    old_svid = ca.issue(make_csr(), "edge-1")
    clock.advance(dt.timedelta(minutes=10))

    new_gen = ca.rotate()
    assert ca.active == new_gen
    assert new_gen.id != old_gen.id
    assert ca.generations == (old_gen, new_gen)
    bundle = ca.bundle()
    assert bundle.roots == (old_gen.root, new_gen.root)

    new_svid = ca.issue(make_csr(), "edge-1")
    assert new_svid.generation_id == new_gen.id
    assert new_svid.intermediate == new_gen.intermediate
    new_svid.certificate.verify_directly_issued_by(new_gen.intermediate)

    # overlap: both verify against the two-root bundle
    verify_svid(old_svid.chain, bundle, now=clock.now)
    verify_svid(new_svid.chain, bundle, now=clock.now)

    # the old root cannot go while the old SVID lives, nor can the active one
    with pytest.raises(RootInUseError, match="1 SVIDs issued"):
        ca.retire(old_gen.id)
    with pytest.raises(RootInUseError, match="active"):
        ca.retire(new_gen.id)
    assert ca.retirable_at(old_gen.id) == old_svid.not_after

    clock.now = old_svid.not_after + dt.timedelta(seconds=1)
    ca.retire(old_gen.id)
    after = ca.bundle()
    assert after.roots == (new_gen.root,)
    assert [gen.id for gen in ca.generations] == [new_gen.id]
    # an old-root SVID no longer chains to the bundle, even at a time it was valid
    with pytest.raises(UntrustedChainError):
        verify_svid(old_svid.chain, after, now=old_svid.not_after - dt.timedelta(minutes=1))
    with pytest.raises(SvidExpiredError):
        verify_svid(old_svid.chain, after, now=clock.now)
    verify_svid(new_svid.chain, after, now=clock.now)


def test_forced_retire_cuts_off_live_svids(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    old_gen = ca.active
    old_svid = ca.issue(make_csr(), "edge-1")
    ca.rotate()
    ca.retire(old_gen.id, force=True)
    with pytest.raises(UntrustedChainError):
        verify_svid(old_svid.chain, ca.bundle(), now=clock.now)


def test_unused_generation_retires_at_once(ca: LocalCertificateAuthority) -> None:
    old_gen = ca.active
    assert ca.retirable_at(old_gen.id) is None
    ca.rotate()
    ca.retire(old_gen.id)
    assert len(ca.bundle().roots) == 1


def test_unknown_generation(ca: LocalCertificateAuthority) -> None:
    with pytest.raises(UnknownGenerationError):
        ca.retire("00" * 32)
    with pytest.raises(UnknownGenerationError):
        ca.retirable_at("nope")


def test_issuance_records_survive_export(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    old_gen = ca.active
    ca.issue(make_csr(), "edge-1")
    ca.rotate()
    copy = LocalCertificateAuthority(ca.config, ca.state(), clock=clock)
    assert copy.active.id == ca.active.id
    with pytest.raises(RootInUseError):
        copy.retire(old_gen.id)
