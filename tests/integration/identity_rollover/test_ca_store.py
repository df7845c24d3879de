"""The shared CA in the store, on MemoryStore and a real etcd: one CA however many replicas
race to create it, updates that cannot overwrite each other, and a bundle that only moves
forward."""

from __future__ import annotations

import asyncio

import pytest

from tiermesh.controlplane.identity import (
    CA_BUNDLE_KEY,
    CA_STATE_PREFIX,
    CaConfig,
    CaNotFoundError,
    CaStateConflict,
    EtcdCaStore,
    KeyStoreError,
    LocalCertificateAuthority,
    WrongPassphraseError,
    read_shared_bundle,
)
from tiermesh.controlplane.store import Store

TRUST_DOMAIN = "mesh.example"
CONFIG = CaConfig(TRUST_DOMAIN)
PASSPHRASE = "correct horse battery staple"


async def state_keys(store: Store) -> list[str]:
    return [entry.key for entry in (await store.read_prefix(CA_STATE_PREFIX)).entries]


async def stored(store: Store) -> dict[str, bytes]:
    return {entry.key: entry.value for entry in (await store.read_prefix("ca/")).entries}


async def test_create_then_every_replica_loads_the_same_ca(store: Store) -> None:
    ca = await EtcdCaStore(store, PASSPHRASE).create_or_load(CONFIG)
    again = await EtcdCaStore(store, PASSPHRASE).create_or_load(CONFIG)
    loaded = await EtcdCaStore(store, PASSPHRASE).load(CONFIG)
    assert again.bundle().fingerprints == ca.bundle().fingerprints
    assert loaded.active.id == ca.active.id
    assert await state_keys(store) == [f"{CA_STATE_PREFIX}000000000001"]
    shared = await read_shared_bundle(store, TRUST_DOMAIN)
    assert shared is not None
    assert shared.fingerprints == ca.bundle().fingerprints


async def test_the_state_is_stored_encrypted(store: Store) -> None:
    await EtcdCaStore(store, PASSPHRASE).create_or_load(CONFIG)
    values = await stored(store)
    state = values[f"{CA_STATE_PREFIX}000000000001"]
    assert b"PRIVATE KEY" not in state
    assert b"BEGIN" not in state
    assert values[CA_BUNDLE_KEY].startswith(b"tiermesh-ca-state: 1\n-----BEGIN CERTIFICATE")
    assert b"PRIVATE KEY" not in values[CA_BUNDLE_KEY]


async def test_racing_replicas_end_with_one_ca(store: Store) -> None:
    replicas = [EtcdCaStore(store, PASSPHRASE) for _ in range(4)]
    cas = await asyncio.gather(*(r.create_or_load(CONFIG) for r in replicas))
    roots = {ca.bundle().fingerprints for ca in cas}
    assert len(roots) == 1, "racing replicas created different CAs"
    assert await state_keys(store) == [f"{CA_STATE_PREFIX}000000000001"]
    assert {r.seq for r in replicas} == {1}
    shared = await read_shared_bundle(store, TRUST_DOMAIN)
    assert shared is not None
    assert (shared.fingerprints,) == tuple(roots)


async def test_a_wrong_passphrase_is_refused_and_overwrites_nothing(store: Store) -> None:
    await EtcdCaStore(store, PASSPHRASE).create_or_load(CONFIG)
    before = await stored(store)
    wrong = EtcdCaStore(store, "not the passphrase")
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        await wrong.create_or_load(CONFIG)
    with pytest.raises(WrongPassphraseError):
        await wrong.load(CONFIG)
    with pytest.raises(CaStateConflict):
        await wrong.save(LocalCertificateAuthority.create(CONFIG))
    assert await stored(store) == before


async def test_rotate_and_retire_reach_every_replica(store: Store) -> None:
    first, second = EtcdCaStore(store, PASSPHRASE), EtcdCaStore(store, PASSPHRASE)
    ca = await first.create_or_load(CONFIG)
    old = ca.active.id
    ca.rotate()
    assert await first.save(ca) == 2
    seen = await second.load(CONFIG)
    assert [g.id for g in seen.generations] == [old, ca.active.id]
    shared = await read_shared_bundle(store, TRUST_DOMAIN)
    assert shared is not None
    assert len(shared.roots) == 2
    assert await state_keys(store) == [f"{CA_STATE_PREFIX}000000000002"]

    seen.retire(old)  # it issued nothing, so nothing depends on it
    assert await second.save(seen) == 3
    reloaded = await EtcdCaStore(store, PASSPHRASE).load(CONFIG)
    assert [g.id for g in reloaded.generations] == [ca.active.id]
    shared = await read_shared_bundle(store, TRUST_DOMAIN)
    assert shared is not None
    assert shared.fingerprints == reloaded.bundle().fingerprints
    assert await state_keys(store) == [f"{CA_STATE_PREFIX}000000000003"]


async def test_concurrent_updates_do_not_overwrite_each_other(store: Store) -> None:
    a, b = EtcdCaStore(store, PASSPHRASE), EtcdCaStore(store, PASSPHRASE)
    ca_a = await a.create_or_load(CONFIG)
    ca_b = await b.load(CONFIG)
    ca_a.rotate()
    ca_b.rotate()
    results = await asyncio.gather(a.save(ca_a), b.save(ca_b), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["CaStateConflict", "int"]
    winner = ca_a if results[0] == 2 else ca_b
    loser = b if winner is ca_a else a
    reloaded = await loser.load(CONFIG)
    assert reloaded.active.id == winner.active.id
    assert loser.seq == 2


async def test_the_bundle_never_moves_back_and_a_load_heals_it(store: Store) -> None:
    replica = EtcdCaStore(store, PASSPHRASE)
    ca = await replica.create_or_load(CONFIG)
    newer = b"tiermesh-ca-state: 99\n" + ca.bundle().to_pem()
    await store.put(CA_BUNDLE_KEY, newer)
    await replica.load(CONFIG)
    assert (await stored(store))[CA_BUNDLE_KEY] == newer

    await store.delete(CA_BUNDLE_KEY)
    assert await read_shared_bundle(store, TRUST_DOMAIN) is None
    await replica.load(CONFIG)
    assert (await stored(store))[CA_BUNDLE_KEY].startswith(b"tiermesh-ca-state: 1\n")


async def test_loading_nothing_and_empty_passphrases_are_refused(store: Store) -> None:
    with pytest.raises(CaNotFoundError):
        await EtcdCaStore(store, PASSPHRASE).load(CONFIG)
    with pytest.raises(KeyStoreError, match="must not be empty"):
        EtcdCaStore(store, "")
    assert await stored(store) == {}
