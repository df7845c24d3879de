"""Which generation signs the control plane's own certificate during a rollover: the
oldest whose intermediate outlives the certificate, else the active one."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.server_cert import issue_server_certificate
from tiermesh.controlplane.identity.server_rotation import signing_generation

if TYPE_CHECKING:
    from conftest import FakeClock

DAY = dt.timedelta(days=1)


def short_lived_ca(clock: FakeClock) -> LocalCertificateAuthority:
    """Intermediates of ten days, SVIDs of at most an hour."""
    config = CaConfig(
        "mesh.example",
        root_ttl=20 * DAY,
        intermediate_ttl=10 * DAY,
        svid_ttl=dt.timedelta(hours=1),
        max_svid_ttl=dt.timedelta(hours=1),
    )
    return LocalCertificateAuthority.create(config, clock=clock)


def test_one_generation_signs_alone(clock: FakeClock) -> None:
    ca = short_lived_ca(clock)
    assert signing_generation(ca, now=clock.now, ttl=DAY) == ca.active


def test_the_old_generation_signs_until_its_intermediate_would_end_first(
    clock: FakeClock,
) -> None:
    ca = short_lived_ca(clock)
    old = ca.active
    clock.advance(5 * DAY)
    new = ca.rotate()
    assert signing_generation(ca, now=clock.now, ttl=DAY) == old
    certificate = issue_server_certificate(ca, now=clock.now, generation=old)
    certificate.certificate.verify_directly_issued_by(old.intermediate)
    assert certificate.intermediate == old.intermediate

    # Less than one certificate lifetime left on the old intermediate: the new one signs.
    clock.advance(4 * DAY + dt.timedelta(hours=1))
    assert signing_generation(ca, now=clock.now, ttl=DAY) == new
    # Retired (or forced out after a compromise): the new one, whatever the old had left.
    clock.now -= 4 * DAY
    ca.retire(old.id, force=True)
    assert signing_generation(ca, now=clock.now, ttl=DAY) == new


def test_with_every_intermediate_ending_too_soon_the_active_one_signs(clock: FakeClock) -> None:
    ca = short_lived_ca(clock)
    ca.rotate()
    assert signing_generation(ca, now=clock.now, ttl=30 * DAY) == ca.active
