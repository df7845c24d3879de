"""Verifying a presented X.509-SVID chain against a trust bundle.

Checks, in order, each failure its own :class:`SvidVerificationError` subclass:

1. the chain parses and is non-empty (:class:`InvalidSvidError`);
2. the leaf has exactly one URI SAN holding a well-formed SPIFFE ID
   (:class:`MissingSpiffeIdError` / :class:`InvalidSvidError`), is not a CA and has the
   digitalSignature usage (:class:`InvalidSvidError`);
3. the SPIFFE ID is in the bundle's trust domain (:class:`TrustDomainMismatchError`);
4. the leaf is valid at ``now`` (:class:`SvidNotYetValidError` / :class:`SvidExpiredError`);
5. a path leads to a bundle root under ``cryptography``'s client-certificate policy (RFC 5280
   + CA/B profile, EKU clientAuth) — :class:`UntrustedChainError` for a foreign or retired CA;
6. optionally, the SPIFFE ID is the one expected (:class:`SpiffeIdMismatchError`).

``spiffe.X509Svid.parse`` checks the profile but not the chain; this module does both.
Pure functions, thread-safe.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, VerificationError
from spiffe import SpiffeId
from spiffe.errors import PySpiffeError

from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.errors import (
    InvalidSvidError,
    MissingSpiffeIdError,
    SpiffeIdMismatchError,
    SvidExpiredError,
    SvidNotYetValidError,
    TrustDomainMismatchError,
    UntrustedChainError,
)
from tiermesh.controlplane.identity.spiffe_id import parse_node_spiffe_id

__all__ = ["MAX_CHAIN_BYTES", "VerifiedSvid", "load_chain", "verify_svid"]

MAX_CHAIN_BYTES = 64 * 1024
_PEM_MARKER = b"-----BEGIN"


@dataclass(frozen=True, slots=True)
class VerifiedSvid:
    """The outcome of a successful :func:`verify_svid`. Immutable.

    ``node_id`` is set when the SPIFFE ID has the ``/node/<node-id>`` form; ``chain`` is the
    validated path, leaf first, root last.
    """

    spiffe_id: str
    trust_domain: str
    node_id: str | None
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def not_after(self) -> dt.datetime:
        """End of the leaf's validity (UTC)."""
        return self.certificate.not_valid_after_utc


def load_chain(data: bytes) -> list[x509.Certificate]:
    """Parse a chain given as concatenated PEM blocks or concatenated DER certificates.

    Raises:
        InvalidSvidError: oversized, empty or unparseable.
    """
    if len(data) > MAX_CHAIN_BYTES:
        raise InvalidSvidError(f"chain of {len(data)} bytes exceeds {MAX_CHAIN_BYTES}")
    try:
        if data.lstrip().startswith(_PEM_MARKER):
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(part) for part in _split_der(data)]
    except ValueError as exc:
        raise InvalidSvidError(f"unparseable chain: {exc}") from exc
    if not certs:
        raise InvalidSvidError("empty chain")
    return certs


def _split_der(data: bytes) -> list[bytes]:
    """Split concatenated DER SEQUENCEs (definite lengths only)."""
    parts: list[bytes] = []
    pos = 0
    while pos < len(data):
        if data[pos] != 0x30 or pos + 2 > len(data):
            raise ValueError(f"no DER SEQUENCE at offset {pos}")
        first = data[pos + 1]
        header = 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or pos + 2 + count > len(data):
                raise ValueError(f"bad DER length at offset {pos}")
            length = int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
            header += count
        end = pos + header + length
        if end > len(data):
            raise ValueError(f"truncated DER certificate at offset {pos}")
        parts.append(data[pos:end])
        pos = end
    return parts


def verify_svid(
    chain: bytes | Sequence[x509.Certificate],
    bundle: TrustBundle,
    *,
    now: dt.datetime,
    expected_spiffe_id: str | None = None,
) -> VerifiedSvid:
    """Verify ``chain`` (leaf first, then intermediates) against ``bundle`` at ``now``.

    ``now`` must be timezone-aware. Raises one of the module's listed errors, all
    subclasses of :class:`SvidVerificationError`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    certs = load_chain(chain) if isinstance(chain, bytes) else list(chain)
    if not certs:
        raise InvalidSvidError("empty chain")
    leaf, intermediates = certs[0], certs[1:]

    spiffe_id = _leaf_spiffe_id(leaf)
    _check_leaf_profile(leaf)
    if spiffe_id.trust_domain.name != bundle.trust_domain:
        raise TrustDomainMismatchError(str(spiffe_id), bundle.trust_domain)
    if now < leaf.not_valid_before_utc:
        raise SvidNotYetValidError(leaf.not_valid_before_utc, now)
    if now > leaf.not_valid_after_utc:
        raise SvidExpiredError(leaf.not_valid_after_utc, now)

    verifier = PolicyBuilder().store(bundle.store).time(now).build_client_verifier()
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise UntrustedChainError(str(exc)) from exc

    text = str(spiffe_id)
    if expected_spiffe_id is not None and text != expected_spiffe_id:
        raise SpiffeIdMismatchError(text, expected_spiffe_id)
    return VerifiedSvid(
        spiffe_id=text,
        trust_domain=bundle.trust_domain,
        node_id=parse_node_spiffe_id(text, bundle.trust_domain),
        certificate=leaf,
        chain=tuple(verified.chain),
    )


def _leaf_spiffe_id(leaf: x509.Certificate) -> SpiffeId:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise MissingSpiffeIdError() from exc
    except ValueError as exc:
        raise InvalidSvidError(f"undecodable extensions: {exc}") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise MissingSpiffeIdError()
    if len(uris) > 1:
        raise InvalidSvidError(f"{len(uris)} URI SANs; an X.509-SVID has exactly one")
    if not uris[0].startswith("spiffe://"):
        raise MissingSpiffeIdError()
    try:
        spiffe_id = SpiffeId(uris[0])
    except PySpiffeError as exc:
        raise InvalidSvidError(f"malformed SPIFFE ID {uris[0]!r}: {exc}") from exc
    if not spiffe_id.path:
        raise InvalidSvidError("a leaf SPIFFE ID needs a path (got the trust domain ID)")
    return spiffe_id


def _check_leaf_profile(leaf: x509.Certificate) -> None:
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise InvalidSvidError("the leaf is a CA certificate")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise InvalidSvidError("the leaf has no KeyUsage extension") from exc
    if not usage.digital_signature or usage.key_cert_sign or usage.crl_sign:
        raise InvalidSvidError("the leaf's KeyUsage must be digitalSignature without CA usages")
