"""One CA for every control-plane replica, kept in the store (etcd).

Layout, relative to the store root::

    ca/state/<seq>  the CA state (keys, certificates, issuance records), encrypted with the
                    operator's passphrase in ``keystore``'s export format (scrypt +
                    AES-256-GCM). ``<seq>`` is 12 decimal digits; the highest one is the CA.
    ca/bundle       the public trust bundle: the PEM roots of the newest state, after one
                    explanatory line ``tiermesh-ca-state: <seq>`` that PEM readers skip.
                    Readable without the passphrase.

Why numbered states rather than one key: the store's only compare-and-swap writes are
create-if-absent and delete-if-value. Writing state ``n + 1`` with ``put_if_absent`` is a
compare-and-swap on "nobody changed the CA since I read state ``n``". Creating the CA is
the same race on state 1: of any number of replicas creating at once exactly one wins and
the others load the winner's CA. A replica that lost an update race gets
:class:`CaStateConflict` and must reload. After a write, older states are deleted, so the
keys of a retired generation leave the store (etcd's history keeps them until compaction).

The bundle key only moves forward: it is replaced only by the bundle of a newer state, so
a slow writer never puts back an old bundle. Loading republishes the loaded state's bundle,
which heals a write that stopped between the state and the bundle.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Final

from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.ca import CaConfig, Clock, LocalCertificateAuthority, utc_now
from tiermesh.controlplane.identity.errors import KeyStoreError
from tiermesh.controlplane.identity.generation import CaState
from tiermesh.controlplane.identity.keystore import export_encrypted, load_encrypted
from tiermesh.controlplane.store import ContentionExhausted, KeyExists, Store

__all__ = [
    "CA_BUNDLE_KEY",
    "CA_STATE_PREFIX",
    "CaNotFoundError",
    "CaStateConflict",
    "EtcdCaStore",
    "read_shared_bundle",
    "state_seq",
]

log = logging.getLogger("tiermesh.identity")

CA_STATE_PREFIX: Final = "ca/state/"
"""Store prefix (relative to the root) of the numbered, encrypted CA states."""

CA_BUNDLE_KEY: Final = "ca/bundle"
"""Store key (relative to the root) of the public trust bundle."""

_SEQ_DIGITS = 12
_SEQ_KEY = re.compile(rf"{re.escape(CA_STATE_PREFIX)}(\d{{{_SEQ_DIGITS}}})")
_BUNDLE_HEADER = re.compile(rb"tiermesh-ca-state: (\d+)\n")
_PUBLISH_ATTEMPTS = 20
_ROTATE_ATTEMPTS = 5


class CaNotFoundError(KeyStoreError):
    """The store holds no CA state yet."""

    def __init__(self) -> None:
        super().__init__("the store holds no CA state; create one first")


class CaStateConflict(KeyStoreError):
    """Another writer saved a CA state first; nothing of this save was written.

    Reload (:meth:`EtcdCaStore.load`), redo the change on the loaded CA and save again.
    """

    def __init__(self, expected_seq: int, found_seq: int) -> None:
        self.expected_seq = expected_seq
        self.found_seq = found_seq
        super().__init__(
            f"the shared CA changed underneath this replica: it expected state {expected_seq}, "
            f"the store holds state {found_seq}; reload the CA and try again"
        )


def _state_key(seq: int) -> str:
    return f"{CA_STATE_PREFIX}{seq:0{_SEQ_DIGITS}d}"


def state_seq(key: str) -> int | None:
    """The state number of a ``ca/state/<seq>`` key (relative to the store root), or
    ``None`` for any other key."""
    found = _SEQ_KEY.fullmatch(key)
    return None if found is None else int(found.group(1))


def _bundle_document(seq: int, bundle: TrustBundle) -> bytes:
    return f"tiermesh-ca-state: {seq}\n".encode() + bundle.to_pem()


def _bundle_seq(document: bytes) -> int:
    found = _BUNDLE_HEADER.match(document)
    return -1 if found is None else int(found.group(1))


class EtcdCaStore:
    """Loads, creates and saves the shared CA in a :class:`Store` (layout in the module doc).

    One instance per replica: it remembers which state it last loaded or wrote, and
    :meth:`save` succeeds only if that is still the newest. Task safety: bound to the
    store's event loop; concurrent calls on one instance are serialised. Key derivation
    (scrypt, tens of milliseconds) runs in a worker thread. Store errors
    (``StoreUnavailable`` …) pass through unchanged.
    """

    def __init__(self, store: Store, passphrase: bytes | str) -> None:
        """``passphrase``: the operator-supplied secret every replica shares.

        Raises:
            KeyStoreError: the passphrase is empty.
        """
        secret = passphrase.encode() if isinstance(passphrase, str) else bytes(passphrase)
        if not secret:
            raise KeyStoreError("the CA passphrase must not be empty")
        self._store = store
        self._passphrase = secret
        self._seq: int | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"EtcdCaStore(seq={self._seq})"

    @property
    def seq(self) -> int | None:
        """The state this instance last loaded or wrote (``None``: neither yet)."""
        return self._seq

    async def load(self, config: CaConfig, *, clock: Clock = utc_now) -> LocalCertificateAuthority:
        """The newest CA state, decrypted, as a CA; republishes its bundle if behind.

        Raises:
            CaNotFoundError: no state is stored.
            WrongPassphraseError: the passphrase is not the one the CA was saved with
                (nothing is written then).
            KeyStoreFormatError, InvalidCaConfigError (another trust domain).
        """
        async with self._lock:
            return await self._load(config, clock)

    async def create_or_load(
        self, config: CaConfig, *, clock: Clock = utc_now
    ) -> LocalCertificateAuthority:
        """The stored CA, or a new one stored as state 1 if there is none.

        Of any number of concurrent callers (in any replicas) at most one creates; the
        others load its CA. Raises as :meth:`load` does.
        """
        async with self._lock:
            if await self._head_seq() is not None:
                return await self._load(config, clock)
            ca = LocalCertificateAuthority.create(config, clock=clock)
            blob = await asyncio.to_thread(export_encrypted, ca.state(), self._passphrase)
            try:
                await self._store.put_if_absent(_state_key(1), blob)
            except KeyExists:
                log.info("another replica created the CA first; loading it")
                return await self._load(config, clock)
            self._seq = 1
            log.info("created the shared CA (trust domain %s)", config.trust_domain)
            await self._publish_bundle(1, ca.bundle())
            return ca

    async def save(self, ca: LocalCertificateAuthority) -> int:
        """Store ``ca``'s state as the next state if the CA was not changed meanwhile.

        Call after every change (rotate, retire, and periodically for issuance records).
        Returns the new state number. Older states are deleted afterwards.

        Raises:
            CaStateConflict: another writer saved first, or this instance never loaded
                the stored CA (nothing is written).
        """
        async with self._lock:
            expected = self._seq or 0
            seq = expected + 1
            blob = await asyncio.to_thread(export_encrypted, ca.state(), self._passphrase)
            try:
                await self._store.put_if_absent(_state_key(seq), blob)
            except KeyExists:
                raise CaStateConflict(expected, await self._head_seq() or seq) from None
            self._seq = seq
            await self._publish_bundle(seq, ca.bundle())
            await self._prune(seq)
            return seq

    async def rotate(
        self,
        config: CaConfig,
        *,
        clock: Clock = utc_now,
        attempts: int = _ROTATE_ATTEMPTS,
        usage: CaState | None = None,
    ) -> LocalCertificateAuthority:
        """Roll the shared CA over: load the newest state, make a new generation the signer
        (the old roots stay in the bundle) and save it. Every replica watching the store
        picks the new state up. A save that loses a race to another writer is redone on the
        winner's state, at most ``attempts`` times. ``usage``: the rotating replica's own
        CA state, whose issuance records are saved with it (``CaState.with_usage_of``).

        Returns the saved CA (its ``active`` is the new generation).

        Raises:
            CaStateConflict: every attempt lost a race.
            CaNotFoundError, WrongPassphraseError, KeyStoreFormatError,
            InvalidCaConfigError: as :meth:`load`.
        """
        conflict: CaStateConflict | None = None
        for _ in range(max(1, attempts)):
            ca = await self.load(config, clock=clock)
            if usage is not None:
                ca = LocalCertificateAuthority(config, ca.state().with_usage_of(usage), clock=clock)
            generation = ca.rotate()
            try:
                seq = await self.save(ca)
            except CaStateConflict as exc:
                conflict = exc
                continue
            log.info(
                "rolled the shared CA over: generation %s signs (state %d)", generation.id, seq
            )
            return ca
        assert conflict is not None
        raise conflict

    async def _load(self, config: CaConfig, clock: Clock) -> LocalCertificateAuthority:
        snapshot = await self._store.read_prefix(CA_STATE_PREFIX)
        numbered = [
            (int(m.group(1)), e) for e in snapshot.entries if (m := _SEQ_KEY.fullmatch(e.key))
        ]
        if not numbered:
            raise CaNotFoundError()
        seq, entry = max(numbered, key=lambda item: item[0])
        state = await asyncio.to_thread(load_encrypted, entry.value, self._passphrase)
        ca = LocalCertificateAuthority(config, state, clock=clock)
        self._seq = seq
        await self._publish_bundle(seq, ca.bundle())
        return ca

    async def _head_seq(self) -> int | None:
        snapshot = await self._store.read_prefix(CA_STATE_PREFIX)
        seqs = [int(m.group(1)) for e in snapshot.entries if (m := _SEQ_KEY.fullmatch(e.key))]
        return max(seqs, default=None)

    async def _publish_bundle(self, seq: int, bundle: TrustBundle) -> None:
        wanted = _bundle_document(seq, bundle)
        for _ in range(_PUBLISH_ATTEMPTS):
            entry = await self._store.get(CA_BUNDLE_KEY)
            if entry is not None:
                if _bundle_seq(entry.value) >= seq:
                    return  # this state's bundle, or a newer state's, is already there
                if not await self._store.delete_if_value(CA_BUNDLE_KEY, entry.value):
                    continue
            try:
                await self._store.put_if_absent(CA_BUNDLE_KEY, wanted)
            except KeyExists:
                continue
            return
        raise ContentionExhausted(CA_BUNDLE_KEY, _PUBLISH_ATTEMPTS)

    async def _prune(self, newest: int) -> None:
        snapshot = await self._store.read_prefix(CA_STATE_PREFIX)
        for entry in snapshot.entries:
            found = _SEQ_KEY.fullmatch(entry.key)
            if found is not None and int(found.group(1)) < newest:
                await self._store.delete_if_value(entry.key, entry.value)


async def read_shared_bundle(store: Store, trust_domain: str) -> TrustBundle | None:
    """The published trust bundle (no passphrase needed), or ``None`` if none is published
    (also for the instant in which a newer state's bundle replaces it).

    Raises:
        InvalidBundleError: the stored bundle is unparseable or holds a non-CA certificate.
    """
    entry = await store.get(CA_BUNDLE_KEY)
    return None if entry is None else TrustBundle.from_pem(trust_domain, entry.value)
