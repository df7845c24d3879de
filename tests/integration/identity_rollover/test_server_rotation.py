"""ServerRotation over the shared CA store (the in-memory fake and a real etcd): the server
certificate renews itself at two thirds of its life, and a CA rollover or retirement saved
by one replica reaches another replica's certificate, bundle, CA and files."""

from __future__ import annotations

import asyncio
import datetime as dt
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.svids import issue_svid
from tiermesh.controlplane.identity import (
    CaConfig,
    EtcdCaStore,
    TrustBundle,
    utc_now,
    verify_svid,
)
from tiermesh.controlplane.identity.server_rotation import RENEW_FRACTION, ServerRotation
from tiermesh.controlplane.store import Store

TD = "mesh.example"
CONFIG = CaConfig(TD)
PASSPHRASE = "correct horse battery staple"
WAIT_S = 10.0


async def eventually(check: Callable[[], bool], what: str, limit_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"not {what} within {limit_s}s"
        await asyncio.sleep(0.02)


def serial_on_disk(folder: Path) -> int:
    return x509.load_pem_x509_certificates((folder / "server-chain.pem").read_bytes())[
        0
    ].serial_number


class Replica:
    """One replica's rotation, and the bundles it reported."""

    def __init__(self, store: Store, folder: Path, ttl: dt.timedelta) -> None:
        self.store = store
        self.folder = folder
        self.ttl = ttl
        self.bundles: list[TrustBundle] = []
        self.rotation: ServerRotation | None = None

    async def start(self) -> ServerRotation:
        ca_store = EtcdCaStore(self.store, PASSPHRASE)
        self.rotation = ServerRotation(
            self.store,
            ca_store,
            CONFIG,
            await ca_store.create_or_load(CONFIG),
            data_dir=self.folder,
            ttl=self.ttl,
            on_bundle_changed=self.bundles.append,
            retry_s=0.1,
        )
        await self.rotation.start()
        return self.rotation


@pytest.fixture
async def replicas(store: Store, tmp_path: Path) -> AsyncIterator[list[Replica]]:
    made = [Replica(store, tmp_path / f"cp-{n}", dt.timedelta(hours=1)) for n in (1, 2)]
    try:
        yield made
    finally:
        for replica in made:
            if replica.rotation is not None:
                await replica.rotation.aclose()


async def test_the_server_certificate_renews_at_two_thirds_of_its_life(
    store: Store, tmp_path: Path
) -> None:
    replica = Replica(store, tmp_path / "cp", dt.timedelta(seconds=1.5))
    rotation = await replica.start()
    try:
        first = rotation.certificate
        started = utc_now()
        assert serial_on_disk(replica.folder) == first.certificate.serial_number
        assert stat.S_IMODE((replica.folder / "server-key.pem").stat().st_mode) == 0o600
        assert stat.S_IMODE((replica.folder / "bundle.pem").stat().st_mode) == 0o644
        life = first.not_after - started
        assert abs((rotation.renew_at - started) - life * RENEW_FRACTION) < dt.timedelta(
            seconds=0.2
        )

        await eventually(lambda: rotation.status()["server_certificate"]["renewals"] >= 2,
                         "renewed twice")  # fmt: skip
        renewed = rotation.certificate
        assert renewed.certificate.serial_number != first.certificate.serial_number
        assert renewed.not_after > first.not_after
        # Renewed before the old one ran out, not after.
        assert utc_now() < renewed.not_after
        await eventually(
            lambda: (
                serial_on_disk(replica.folder) == rotation.certificate.certificate.serial_number
            ),
            "the chain file rewritten",
        )
        assert replica.bundles == []  # the roots never changed
    finally:
        await rotation.aclose()
    # A write under way when the task stopped still ends in a rename: no temporary left.
    await eventually(
        lambda: (
            sorted(p.name for p in replica.folder.iterdir())
            == ["bundle.pem", "server-chain.pem", "server-key.pem"]
        ),
        "only the three files",
        limit_s=2,
    )


async def test_a_rollover_through_one_replica_reaches_the_other(
    replicas: list[Replica],
) -> None:
    one, other = [await replica.start() for replica in replicas]
    old = other.ca.current.active
    old_svid = issue_svid(one.ca.current, "edge-1")
    other_svid = x509.load_pem_x509_certificates(issue_svid(other.ca.current, "edge-9")[0])[0]
    before = other.certificate
    assert other.status()["trust_bundle"]["generation"] == 1

    new = await one.rotate_ca()
    assert new.id != old.id
    assert one.ca.current.active.id == new.id  # the rotating replica serves it at once

    await eventually(lambda: other.status()["trust_bundle"]["generation"] == 2, "followed")
    assert other.ca.current.active.id == new.id
    assert other.bundle.fingerprints == (old.id, new.id)
    assert [b.fingerprints for b in replicas[1].bundles] == [(old.id, new.id)]
    # A new server certificate, still from the old generation: clients that hold only
    # the old root keep verifying it during the overlap.
    after = other.certificate
    assert after.certificate.serial_number != before.certificate.serial_number
    after.certificate.verify_directly_issued_by(old.intermediate)
    assert other.status()["server_certificate"]["issuer_generation"] == old.id
    # The other replica now issues from the new generation; both SVIDs verify.
    new_svid = other.ca.current.issue_for_key(
        x509.load_pem_x509_certificates(old_svid[0])[0].public_key(), "edge-2"
    )
    assert new_svid.generation_id == new.id
    verify_svid(old_svid[0], other.ca.bundle(), now=utc_now())
    verify_svid(new_svid.chain, other.ca.bundle(), now=utc_now())
    # Issuance records survive the hand-over: the rotating replica saved its own with the
    # new state, the other merged its own into what it loaded. Either holds back a
    # retirement of the old root while an SVID they issued lives.
    second = dt.timedelta(seconds=1)
    kept = other.ca.current.retirable_at(old.id)
    assert kept is not None
    assert dt.timedelta(0) <= kept - other_svid.not_valid_after_utc < second
    saved = await EtcdCaStore(replicas[0].store, PASSPHRASE).load(CONFIG)
    first_svid = x509.load_pem_x509_certificates(old_svid[0])[0]
    stored = saved.retirable_at(old.id)
    assert stored is not None
    assert dt.timedelta(0) <= stored - first_svid.not_valid_after_utc < second
    on_disk = x509.load_pem_x509_certificates((replicas[1].folder / "bundle.pem").read_bytes())
    assert {c.serial_number for c in on_disk} == {old.root.serial_number, new.root.serial_number}

    # An operator retires the old root (forced, as after a key compromise), through a
    # third writer: both replicas move their certificates to the new generation.
    operator = EtcdCaStore(replicas[0].store, PASSPHRASE)
    ca = await operator.load(CONFIG)
    ca.retire(old.id, force=True)
    assert await operator.save(ca) == 3
    for replica in (one, other):
        await eventually(lambda r=replica: r.status()["trust_bundle"]["generation"] == 3,  # type: ignore[misc]
                         "followed the retirement")  # fmt: skip
        assert replica.bundle.fingerprints == (new.id,)
        replica.certificate.certificate.verify_directly_issued_by(new.intermediate)


async def test_a_renewal_the_ca_cannot_sign_is_retried_until_a_rollover_heals_it(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An intermediate of three seconds runs out under a two-second server certificate:
    renewals fail (logged, retried with backoff, the loop keeps going) until a rollover
    brings a generation that can sign."""
    seconds = dt.timedelta(seconds=1)
    brief = CaConfig(
        TD, root_ttl=3 * seconds, intermediate_ttl=3 * seconds, svid_ttl=seconds,
        max_svid_ttl=seconds, backdate=dt.timedelta(0),
    )  # fmt: skip
    ca_store = EtcdCaStore(store, PASSPHRASE)
    rotation = ServerRotation(
        store, ca_store, brief, await ca_store.create_or_load(brief),
        data_dir=tmp_path / "cp", ttl=2 * seconds, retry_s=0.05,
    )  # fmt: skip
    caplog.set_level("ERROR", logger="tiermesh.identity")
    await rotation.start()
    try:
        first_generation = rotation.ca.current.active
        await eventually(
            lambda: "server certificate renewal failed (2 in a row)" in caplog.text,
            "renewals failing once the intermediate ran out",
        )
        assert "the signing intermediate expired at" in caplog.text
        new = await rotation.rotate_ca()
        assert new.id != first_generation.id
        rotation.certificate.certificate.verify_directly_issued_by(new.intermediate)
        renewals = rotation.status()["server_certificate"]["renewals"]
        await eventually(
            lambda: rotation.status()["server_certificate"]["renewals"] > renewals,
            "renewing on time again",
        )
    finally:
        await rotation.aclose()
