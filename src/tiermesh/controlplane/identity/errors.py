"""Errors raised by the identity package. Every exception derives from :class:`IdentityError`.

Exceptions carry structured fields and format their own message. Three families matter to
callers: :class:`CsrRejectedError` (a node asked for something it may not have; nothing was
issued), :class:`SvidVerificationError` (a presented certificate chain is not a valid SVID of
this trust domain) and :class:`KeyStoreError` (CA material could not be stored or loaded).
"""

from __future__ import annotations

import datetime as dt

__all__ = [
    "CaExpiredError",
    "CsrIdentityMismatchError",
    "CsrRejectedError",
    "CsrRequestsCaError",
    "CsrSignatureError",
    "CsrTooLargeError",
    "IdentityError",
    "InsecurePermissionsError",
    "InvalidBundleError",
    "InvalidCaConfigError",
    "InvalidNodeIdError",
    "InvalidSvidError",
    "InvalidTrustDomainError",
    "InvalidTtlError",
    "KeyStoreError",
    "KeyStoreFormatError",
    "MalformedCsrError",
    "MissingSpiffeIdError",
    "RootInUseError",
    "ServerFilesError",
    "SpiffeIdMismatchError",
    "SvidExpiredError",
    "SvidNotYetValidError",
    "SvidVerificationError",
    "TrustDomainMismatchError",
    "UnknownGenerationError",
    "UnsupportedKeyError",
    "UntrustedChainError",
    "WrongPassphraseError",
]


class IdentityError(Exception):
    """Root of the identity package's errors."""


# --- names -------------------------------------------------------------------------------


class InvalidNodeIdError(IdentityError):
    """A node id is outside the allowed form (see ``spiffe_id.NODE_ID_RULE``)."""

    def __init__(self, node_id: str, reason: str) -> None:
        self.node_id = node_id
        self.reason = reason
        super().__init__(f"invalid node id {node_id[:80]!r}: {reason}")


class InvalidTrustDomainError(IdentityError):
    """A trust domain name is outside the allowed form."""

    def __init__(self, trust_domain: str, reason: str) -> None:
        self.trust_domain = trust_domain
        self.reason = reason
        super().__init__(f"invalid trust domain {trust_domain[:80]!r}: {reason}")


# --- CA configuration and issuance -------------------------------------------------------


class InvalidCaConfigError(IdentityError):
    """A CA setting is out of range (lifetimes, TTL bounds)."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"invalid CA setting {setting}: {reason}")


class InvalidTtlError(IdentityError):
    """A requested SVID lifetime is not positive or exceeds the CA's maximum."""

    def __init__(self, ttl: dt.timedelta, maximum: dt.timedelta) -> None:
        self.ttl = ttl
        self.maximum = maximum
        super().__init__(f"SVID TTL {ttl} is not within (0, {maximum}]")


class CaExpiredError(IdentityError):
    """The active intermediate has no lifetime left to sign with; roll the CA over."""

    def __init__(self, not_after: dt.datetime, now: dt.datetime) -> None:
        self.not_after = not_after
        self.now = now
        super().__init__(
            f"the signing intermediate expired at {not_after.isoformat()} "
            f"(now {now.isoformat()}); roll the CA over"
        )


class UnknownGenerationError(IdentityError):
    """A CA generation id names no generation this CA holds."""

    def __init__(self, generation_id: str) -> None:
        self.generation_id = generation_id
        super().__init__(f"no CA generation {generation_id!r}")


class RootInUseError(IdentityError):
    """A root cannot be retired: it is the active one, or SVIDs it issued are still live."""

    def __init__(self, generation_id: str, reason: str) -> None:
        self.generation_id = generation_id
        self.reason = reason
        super().__init__(f"cannot retire CA generation {generation_id[:16]}: {reason}")


class InvalidBundleError(IdentityError):
    """Trust bundle data is unparseable or holds something other than CA certificates."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid trust bundle: {reason}")


# --- CSR rejection -----------------------------------------------------------------------


class CsrRejectedError(IdentityError):
    """A certificate signing request was refused; nothing was issued."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"CSR rejected: {reason}")


class CsrTooLargeError(CsrRejectedError):
    """The CSR is larger than the accepted bound (checked before any parsing)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{size} bytes exceeds the limit of {limit} bytes")


class MalformedCsrError(CsrRejectedError):
    """The bytes are not a parseable PKCS#10 request (PEM or DER)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"malformed CSR: {detail}")


class CsrSignatureError(CsrRejectedError):
    """The CSR's self-signature does not verify: the requester does not hold the key."""

    def __init__(self) -> None:
        super().__init__("the CSR signature does not verify against its public key")


class UnsupportedKeyError(CsrRejectedError):
    """The CSR's public key type or size is not accepted (see ``csr.ACCEPTED_KEYS``)."""

    def __init__(self, key_description: str) -> None:
        self.key_description = key_description
        super().__init__(f"unsupported or weak key: {key_description}")


class CsrIdentityMismatchError(CsrRejectedError):
    """The CSR asks for a name (URI/DNS/other SAN) other than the node's own identity."""

    def __init__(self, requested: str, allowed: str) -> None:
        self.requested = requested
        self.allowed = allowed
        super().__init__(f"CSR requests {requested!r}; this node may only have {allowed}")


class CsrRequestsCaError(CsrRejectedError):
    """The CSR asks for CA powers (BasicConstraints CA=true or keyCertSign/cRLSign usage)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"CSR requests CA powers ({detail})")


# --- SVID verification -------------------------------------------------------------------


class SvidVerificationError(IdentityError):
    """A presented certificate chain is not a valid SVID of the expected trust domain."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"SVID verification failed: {reason}")


class InvalidSvidError(SvidVerificationError):
    """The chain is unparseable, empty, or its leaf breaks the X.509-SVID profile."""


class MissingSpiffeIdError(SvidVerificationError):
    """The leaf carries no URI SAN holding a SPIFFE ID."""

    def __init__(self) -> None:
        super().__init__("the leaf certificate has no SPIFFE ID URI SAN")


class TrustDomainMismatchError(SvidVerificationError):
    """The SPIFFE ID belongs to a trust domain other than the bundle's."""

    def __init__(self, spiffe_id: str, expected_trust_domain: str) -> None:
        self.spiffe_id = spiffe_id
        self.expected_trust_domain = expected_trust_domain
        super().__init__(f"{spiffe_id!r} is not in trust domain {expected_trust_domain!r}")


class SpiffeIdMismatchError(SvidVerificationError):
    """The SVID is valid but names a different workload than the caller expected."""

    def __init__(self, spiffe_id: str, expected: str) -> None:
        self.spiffe_id = spiffe_id
        self.expected = expected
        super().__init__(f"SVID is for {spiffe_id!r}, expected {expected!r}")


class SvidExpiredError(SvidVerificationError):
    """The leaf's validity ended before the verification time."""

    def __init__(self, not_after: dt.datetime, now: dt.datetime) -> None:
        self.not_after = not_after
        self.now = now
        super().__init__(f"expired at {not_after.isoformat()} (now {now.isoformat()})")


class SvidNotYetValidError(SvidVerificationError):
    """The leaf's validity starts after the verification time."""

    def __init__(self, not_before: dt.datetime, now: dt.datetime) -> None:
        self.not_before = not_before
        self.now = now
        super().__init__(f"not valid before {not_before.isoformat()} (now {now.isoformat()})")


class UntrustedChainError(SvidVerificationError):
    """No path leads from the leaf to a root in the trust bundle (foreign or retired CA)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"chain does not lead to a root in the trust bundle ({detail})")


# --- key storage -------------------------------------------------------------------------


class KeyStoreError(IdentityError):
    """CA material could not be written or read."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class WrongPassphraseError(KeyStoreError):
    """Decryption failed: the passphrase is wrong or the export was altered."""

    def __init__(self) -> None:
        super().__init__("cannot decrypt the CA export: wrong passphrase, or the data was altered")


class KeyStoreFormatError(KeyStoreError):
    """The stored or exported CA data is not in a format this version reads."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"unreadable CA data: {detail}")


class InsecurePermissionsError(KeyStoreError):
    """A key file or its directory is readable or writable by others than the owner."""

    def __init__(self, path: str, mode: int, expected: int) -> None:
        self.path = path
        self.mode = mode
        self.expected = expected
        super().__init__(f"{path} has mode {mode:04o}; it must be {expected:04o} (owner only)")


class ServerFilesError(IdentityError):
    """The control plane's certificate, key or bundle could not be written to its folder."""

    def __init__(self, folder: str, detail: str) -> None:
        self.folder = folder
        self.detail = detail
        super().__init__(f"cannot write the server certificate files to {folder}: {detail}")
