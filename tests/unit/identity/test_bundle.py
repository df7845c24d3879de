"""The trust bundle value."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tiermesh.controlplane.identity import (
    InvalidBundleError,
    InvalidTrustDomainError,
    LocalCertificateAuthority,
    TrustBundle,
)


def test_bundle_dedups_and_extends(ca: LocalCertificateAuthority) -> None:
    root = ca.active.root
    bundle = TrustBundle("mesh.example", (root, root))
    assert bundle.roots == (root,)
    new = ca.rotate()
    grown = bundle.with_roots([new.root])
    assert grown.roots == (root, new.root)
    assert grown.fingerprints == (ca.generations[0].id, new.id)


def test_bundle_refuses_bad_content(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    with pytest.raises(InvalidBundleError, match="at least one"):
        TrustBundle("mesh.example", ())
    leaf = ca.issue(make_csr(), "edge-1").certificate
    with pytest.raises(InvalidBundleError, match="not a CA"):
        TrustBundle("mesh.example", (leaf,))
    with pytest.raises(InvalidBundleError):
        TrustBundle.from_pem("mesh.example", b"garbage")
    with pytest.raises(InvalidTrustDomainError):
        TrustBundle("Mesh", (ca.active.root,))
