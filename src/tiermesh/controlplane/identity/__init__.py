"""The control plane's SPIFFE certificate authority.

Issues X.509-SVIDs (``spiffe://<trust-domain>/node/<node-id>``) from node CSRs, keeps the
trust bundle across CA rollovers, verifies presented SVID chains, and stores CA keys
(owner-only files, or an encrypted export that replicas can share through etcd).
Every error derives from :class:`IdentityError`.
"""

from __future__ import annotations

from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.ca import (
    CaConfig,
    CertificateAuthority,
    Clock,
    IssuedSvid,
    LocalCertificateAuthority,
    utc_now,
)
from tiermesh.controlplane.identity.ca_store import (
    CA_BUNDLE_KEY,
    CA_STATE_PREFIX,
    CaNotFoundError,
    CaStateConflict,
    EtcdCaStore,
    read_shared_bundle,
)
from tiermesh.controlplane.identity.csr import (
    ACCEPTED_KEYS,
    MAX_CSR_BYTES,
    check_csr,
    check_public_key,
    load_csr,
)
from tiermesh.controlplane.identity.errors import (
    CaExpiredError,
    CsrIdentityMismatchError,
    CsrRejectedError,
    CsrRequestsCaError,
    CsrSignatureError,
    CsrTooLargeError,
    IdentityError,
    InsecurePermissionsError,
    InvalidBundleError,
    InvalidCaConfigError,
    InvalidNodeIdError,
    InvalidSvidError,
    InvalidTrustDomainError,
    InvalidTtlError,
    KeyStoreError,
    KeyStoreFormatError,
    MalformedCsrError,
    MissingSpiffeIdError,
    RootInUseError,
    ServerFilesError,
    SpiffeIdMismatchError,
    SvidExpiredError,
    SvidNotYetValidError,
    SvidVerificationError,
    TrustDomainMismatchError,
    UnknownGenerationError,
    UnsupportedKeyError,
    UntrustedChainError,
    WrongPassphraseError,
)
from tiermesh.controlplane.identity.generation import (
    CaGeneration,
    CaState,
    GenerationRecord,
    KeyAlgorithm,
)
from tiermesh.controlplane.identity.keystore import (
    FileKeyStore,
    export_encrypted,
    load_encrypted,
)
from tiermesh.controlplane.identity.renewal import needs_rotation, rotation_due_at
from tiermesh.controlplane.identity.spiffe_id import (
    NodeIdentity,
    parse_node_spiffe_id,
    validate_node_id,
    validate_trust_domain,
)
from tiermesh.controlplane.identity.verify import VerifiedSvid, load_chain, verify_svid

__all__ = [
    "ACCEPTED_KEYS",
    "CA_BUNDLE_KEY",
    "CA_STATE_PREFIX",
    "MAX_CSR_BYTES",
    "CaConfig",
    "CaExpiredError",
    "CaGeneration",
    "CaNotFoundError",
    "CaState",
    "CaStateConflict",
    "CertificateAuthority",
    "Clock",
    "CsrIdentityMismatchError",
    "CsrRejectedError",
    "CsrRequestsCaError",
    "CsrSignatureError",
    "CsrTooLargeError",
    "EtcdCaStore",
    "FileKeyStore",
    "GenerationRecord",
    "IdentityError",
    "InsecurePermissionsError",
    "InvalidBundleError",
    "InvalidCaConfigError",
    "InvalidNodeIdError",
    "InvalidSvidError",
    "InvalidTrustDomainError",
    "InvalidTtlError",
    "IssuedSvid",
    "KeyAlgorithm",
    "KeyStoreError",
    "KeyStoreFormatError",
    "LocalCertificateAuthority",
    "MalformedCsrError",
    "MissingSpiffeIdError",
    "NodeIdentity",
    "RootInUseError",
    "ServerFilesError",
    "SpiffeIdMismatchError",
    "SvidExpiredError",
    "SvidNotYetValidError",
    "SvidVerificationError",
    "TrustBundle",
    "TrustDomainMismatchError",
    "UnknownGenerationError",
    "UnsupportedKeyError",
    "UntrustedChainError",
    "VerifiedSvid",
    "WrongPassphraseError",
    "check_csr",
    "check_public_key",
    "export_encrypted",
    "load_chain",
    "load_csr",
    "load_encrypted",
    "needs_rotation",
    "parse_node_spiffe_id",
    "read_shared_bundle",
    "rotation_due_at",
    "utc_now",
    "validate_node_id",
    "validate_trust_domain",
    "verify_svid",
]
