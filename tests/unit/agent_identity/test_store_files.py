"""The identity store: change notification, watchers, and owner-only files."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.unit.agent_identity.casource import FakeClock
from tiermesh.agents.identity import (
    NoSvidError,
    SvidFiles,
    SvidMaterial,
    SvidStore,
    build_csr,
    generate_key,
    load_material,
)
from tiermesh.controlplane.identity import LocalCertificateAuthority


def _material(ca: LocalCertificateAuthority, clock: FakeClock) -> SvidMaterial:
    key = generate_key()
    issued = ca.issue(build_csr(key), "edge-1")
    return load_material(key, issued.chain_pem(), ca.bundle().to_pem(), now=clock())


async def test_watchers_see_the_current_identity_then_each_change(
    ca: LocalCertificateAuthority, clock: FakeClock
) -> None:
    store = SvidStore()
    with pytest.raises(NoSvidError):
        store.require()
    seen: list[int] = []

    async def consume() -> None:
        async for material in store.watch():
            seen.append(material.serial)
            if len(seen) == 2:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    first, second = _material(ca, clock), _material(ca, clock)
    store.update(first)
    await asyncio.sleep(0)
    store.update(second)
    await asyncio.wait_for(task, 2)
    assert seen == [first.serial, second.serial]
    assert store.version == 2
    assert await store.wait() is second


async def test_a_slow_watcher_skips_to_the_latest(
    ca: LocalCertificateAuthority, clock: FakeClock
) -> None:
    store = SvidStore()
    materials = [_material(ca, clock) for _ in range(3)]
    watch = store.watch()
    store.update(materials[0])
    assert (await anext(watch)) is materials[0]
    store.update(materials[1])
    store.update(materials[2])
    assert (await anext(watch)) is materials[2]
    await watch.aclose()  # type: ignore[attr-defined]


async def test_callbacks_run_in_order_and_a_failing_one_does_not_stop_others(
    ca: LocalCertificateAuthority, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SvidStore()
    calls: list[str] = []

    def broken(_m: SvidMaterial) -> None:
        calls.append("broken")
        raise RuntimeError("boom")

    store.subscribe(broken)
    unsubscribe = store.subscribe(lambda m: calls.append(m.spiffe_id))
    store.update(_material(ca, clock))
    assert calls == ["broken", "spiffe://mesh.example/node/edge-1"]
    assert "subscriber failed" in caplog.text
    unsubscribe()
    store.update(_material(ca, clock))
    assert calls[-1] == "broken"


def test_files_are_owner_only_and_replaced_atomically(
    ca: LocalCertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    directory = tmp_path / "identity"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    files = SvidFiles(directory)
    store = SvidStore(files=files)
    material = _material(ca, clock)
    store.update(material)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.chain_path.stat().st_mode) == 0o644
    assert files.chain_path.read_bytes() == material.chain_pem()
    assert files.bundle_path.read_bytes() == material.bundle_pem()
    key = serialization.load_pem_private_key(files.key_path.read_bytes(), None)
    assert key.public_key() == material.private_key.public_key()

    renewed = _material(ca, clock)
    store.update(renewed)
    assert files.chain_path.read_bytes() == renewed.chain_pem()
    assert sorted(p.name for p in directory.iterdir()) == ["bundle.pem", "svid.pem", "svid_key.pem"]
    files.remove()
    assert list(directory.iterdir()) == []


def test_an_unwritable_directory_keeps_the_old_identity(
    ca: LocalCertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    store = SvidStore(files=SvidFiles(blocker / "identity"))
    with pytest.raises(OSError):  # noqa: PT011 - the OS decides which subclass
        store.update(_material(ca, clock))
    assert store.current is None
    assert store.version == 0
