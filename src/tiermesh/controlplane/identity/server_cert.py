"""The control plane's own certificate, for the node API and the ADS server.

The CA issues node SVIDs only (``/node/<id>``); this module signs the one other identity of
a trust domain: ``spiffe://<td>/controlplane`` with DNS SAN ``controlplane.<td>`` (what
grpcio clients check) plus any extra DNS names (``localhost`` for a one-machine mesh).
Envoy checks the URI SAN (``AdsTls.server_san``). Profile as a node SVID: EC P-256 key made
here, CA=false, digitalSignature, EKU serverAuth+clientAuth, signed by the active
intermediate, or the one the caller names (:mod:`.server_rotation` picks the oldest
still trusted, so clients holding an older bundle keep verifying it).

The CA does not count these certificates in its issuance record, so
``LocalCertificateAuthority.retire`` does not wait for them: issue a new server certificate
after every CA rotation (they are short-lived; default one day). Thread-safe; pure apart
from key generation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tiermesh.controlplane.api.join import control_plane_dns_name, control_plane_spiffe_id
from tiermesh.controlplane.identity.ca import LocalCertificateAuthority
from tiermesh.controlplane.identity.errors import CaExpiredError, InvalidTtlError
from tiermesh.controlplane.identity.generation import CaGeneration, signature_hash

__all__ = ["DEFAULT_SERVER_TTL", "ServerCertificate", "issue_server_certificate"]

DEFAULT_SERVER_TTL = dt.timedelta(days=1)
_BACKDATE = dt.timedelta(seconds=30)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A control-plane certificate with its private key. Immutable; keep the key secret."""

    spiffe_id: str
    dns_names: tuple[str, ...]
    certificate: x509.Certificate
    intermediate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def not_after(self) -> dt.datetime:
        """End of validity (UTC)."""
        return self.certificate.not_valid_after_utc

    def chain_pem(self) -> bytes:
        """Leaf then intermediate, PEM (gRPC ``certificate_chain``)."""
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in (self.certificate, self.intermediate)
        )

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM (gRPC ``private_key``)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue_server_certificate(
    ca: LocalCertificateAuthority,
    *,
    now: dt.datetime,
    ttl: dt.timedelta = DEFAULT_SERVER_TTL,
    extra_dns_names: Sequence[str] = (),
    generation: CaGeneration | None = None,
) -> ServerCertificate:
    """Sign a fresh control-plane certificate with the intermediate of ``generation`` (one
    of ``ca``'s; default the active one).

    Validity is ``[now - 30 s, now + ttl]``, cut short at the intermediate's expiry.

    Raises:
        InvalidTtlError: ``ttl`` is not positive or longer than the intermediate's lifetime.
        CaExpiredError: the intermediate has expired; roll the CA over.
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if generation is None:
        generation = ca.active
    inter = generation.intermediate
    inter_end = inter.not_valid_after_utc
    if ttl <= dt.timedelta(0) or ttl > inter_end - inter.not_valid_before_utc:
        raise InvalidTtlError(ttl, inter_end - inter.not_valid_before_utc)
    if inter_end <= now:
        raise CaExpiredError(inter_end, now)
    trust_domain = ca.trust_domain
    spiffe_id = control_plane_spiffe_id(trust_domain)
    dns_names = tuple(dict.fromkeys((control_plane_dns_name(trust_domain), *extra_dns_names)))
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_ski = inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tiermesh"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "controlplane"),
                ]
            )
        )
        .issuer_name(inter.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - _BACKDATE, inter.not_valid_before_utc))
        .not_valid_after(min(now + ttl, inter_end))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_USAGE, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(spiffe_id),
                    *(x509.DNSName(name) for name in dns_names),
                ]
            ),
            critical=False,
        )
        .sign(generation.intermediate_key, signature_hash(generation.intermediate_key))
    )
    return ServerCertificate(spiffe_id, dns_names, certificate, inter, key)
