"""Fixtures for the agent identity unit tests: a fake clock and a CA that follows it."""

from __future__ import annotations

import pytest

from tests.unit.agent_identity.casource import CaSource, FakeClock, make_ca
from tiermesh.controlplane.identity import LocalCertificateAuthority


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ca(clock: FakeClock) -> LocalCertificateAuthority:
    return make_ca(clock=clock)


@pytest.fixture
def source(ca: LocalCertificateAuthority) -> CaSource:
    return CaSource(ca)
