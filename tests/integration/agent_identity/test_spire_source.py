"""Taking the identity from a SPIRE agent's Workload API (a tiermesh one stands in for it)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from spiffe import WorkloadApiClient

from tests.integration.agent_identity.conftest import Served
from tiermesh.agents.identity import SpireSource, SpireSourceError, SvidStore, WorkloadApiServer
from tiermesh.controlplane.identity import verify_svid


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def test_follows_the_spire_svid_and_its_rotations(served: Served, sock_dir: Path) -> None:
    spire = served  # stands in for the SPIRE agent
    store = SvidStore()
    changes: list[int] = []
    store.subscribe(lambda m: changes.append(m.serial))
    async with SpireSource(store, spire.server.socket_path, timeout_s=5) as source:
        mirrored = store.require()
        assert mirrored.serial == spire.store.require().serial
        assert mirrored.key_der() == spire.store.require().key_der()
        verify_svid(mirrored.chain_pem(), spire.ca.bundle(), now=_now())

        async with WorkloadApiServer(store, sock_dir / "ours.sock") as ours:
            for _ in range(2):
                rotated = await spire.rotator.rotate_now()
                for _ in range(250):
                    if store.require().serial == rotated.serial:
                        break
                    await asyncio.sleep(0.02)
                assert store.require().serial == rotated.serial
            with WorkloadApiClient(ours.endpoint, default_timeout=5) as client:
                svid = await asyncio.to_thread(client.fetch_x509_svid)
        assert svid.leaf.serial_number == spire.store.require().serial
        assert source.rejected == 0
    assert len(set(changes)) == 3


async def test_a_missing_or_silent_spire_agent_is_an_error(sock_dir: Path) -> None:
    with pytest.raises(SpireSourceError, match="does not exist"):
        await SpireSource(SvidStore(), sock_dir / "nothing.sock", timeout_s=0.5).start()
    async with WorkloadApiServer(SvidStore(), sock_dir / "silent.sock") as silent:
        store = SvidStore()
        with pytest.raises(SpireSourceError, match="Timeout"):
            await SpireSource(store, silent.socket_path, timeout_s=0.3).start()
        assert store.current is None
