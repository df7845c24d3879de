"""CaState.with_usage_of: a replica that adopts another's CA state keeps the issuance
records of the SVIDs it signed itself."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority

if TYPE_CHECKING:
    from conftest import FakeClock


def test_records_take_the_larger_count_and_the_later_expiry(
    config: CaConfig, clock: FakeClock, make_csr: Callable[..., bytes]
) -> None:
    mine = LocalCertificateAuthority.create(config, clock=clock)
    old = mine.active
    theirs = LocalCertificateAuthority(config, mine.state(), clock=clock)  # same CA, loaded
    mine.issue(make_csr(), "edge-1")
    clock.advance(dt.timedelta(minutes=5))
    late = mine.issue(make_csr(), "edge-1")
    theirs.issue(make_csr(), "edge-2")  # earlier expiry than ``late``
    new = theirs.rotate()  # another replica rolled over and saved

    merged = LocalCertificateAuthority(config, theirs.state().with_usage_of(mine.state()))
    assert [g.id for g in merged.generations] == [old.id, new.id]
    records = {r.generation.id: r for r in merged.state().generations}
    assert records[old.id].issued == 2
    assert records[old.id].latest_expiry == mine.retirable_at(old.id)
    assert merged.retirable_at(old.id) is not None
    assert merged.retirable_at(old.id) >= late.not_after
    assert records[new.id].issued == 0
    assert records[new.id].latest_expiry is None


def test_a_generation_retired_elsewhere_is_not_brought_back(
    config: CaConfig, clock: FakeClock, make_csr: Callable[..., bytes]
) -> None:
    mine = LocalCertificateAuthority.create(config, clock=clock)
    old = mine.active
    mine.issue(make_csr(), "edge-1")
    theirs = LocalCertificateAuthority(config, mine.state(), clock=clock)
    theirs.rotate()
    theirs.retire(old.id, force=True)
    merged = theirs.state().with_usage_of(mine.state())
    assert [r.generation.id for r in merged.generations] == [theirs.active.id]
