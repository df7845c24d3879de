"""A store per implementation for suites that run against both: the in-memory fake and
a real etcd."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tiermesh.controlplane.store import EtcdStore, MemoryStore, Store
from tiermesh.procs.etcd import EtcdServer

__all__ = ["STORE_KINDS", "store_of"]

STORE_KINDS: tuple[Any, ...] = ("memory", pytest.param("etcd", marks=pytest.mark.etcd))
"""``params`` of a store fixture: the fake, then etcd (``etcd`` marker)."""


@contextlib.asynccontextmanager
async def store_of(kind: str, etcd: Callable[[], EtcdServer]) -> AsyncIterator[Store]:
    """A MemoryStore, or an EtcdStore on ``etcd()`` (called only then), under a root of its
    own; closed on exit."""
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    chosen: MemoryStore | EtcdStore
    if kind == "memory":
        chosen = MemoryStore(root=root)
    else:
        chosen = EtcdStore(etcd().endpoint, root=root)
        await chosen.connect()
    try:
        yield chosen
    finally:
        await chosen.aclose()
