"""A CA rollover hands every node's compiler settings the new trust bundle and asks for a
full reconcile (NodeDirectory.set_trust_bundle)."""

from __future__ import annotations

import asyncio

from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.store.memory import MemoryStore


async def test_a_new_bundle_reaches_the_settings_and_asks_for_a_reconcile() -> None:
    changes: list[str] = []
    directory = NodeDirectory(
        MemoryStore(), "OLD", on_settings_changed=lambda: changes.append("full")
    )
    await directory.start()
    try:
        before = await asyncio.to_thread(directory.settings_for, "edge-1")
        assert before.trust_bundle_pem == "OLD"
        directory.set_trust_bundle("OLD+NEW")
        after = await asyncio.to_thread(directory.settings_for, "edge-1")
        assert after.trust_bundle_pem == "OLD+NEW"
        assert changes == ["full"]
        directory.set_trust_bundle("OLD+NEW")  # the same bundle again: nothing to redo
        assert changes == ["full"]
    finally:
        await directory.aclose()
