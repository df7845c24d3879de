"""How soon a broken registry session is reopened: a node's registration lives one lease
TTL without a session, so a replica that goes away must not cost a growing delay."""

from __future__ import annotations

import asyncio
import itertools
import time

from tiermesh.agents.identity import Backoff, SvidStore
from tiermesh.agents.runtime.session import RegistrySession
from tiermesh.controlplane.api import NodeLoad, NodeRegistration


async def _idle() -> NodeLoad:
    return NodeLoad()


class _Flapping(RegistrySession):
    """Registers on every attempt, then the stream breaks (a replica restarted); records
    the addresses and times of the attempts. A fake of the stream only."""

    def __init__(self, addresses: list[str], *, register: bool = True) -> None:
        super().__init__(
            SvidStore(),
            NodeRegistration(node_id="edge-1", tier="local", region="eu", app_port=18080),
            addresses=addresses,
            server_name="controlplane.test",
            measure=_idle,
            backoff=Backoff(initial=0.5, factor=2.0, maximum=10.0, jitter=0.0),
        )
        self.register = register
        self.attempts: list[tuple[str, float]] = []

    async def _session(self, address: str) -> None:
        self.attempts.append((address, time.monotonic()))
        if len(self.attempts) >= 6:
            await self.goodbye_soon()
        if self.register:
            self.sessions += 1
        raise ConnectionError("stream removed")

    async def goodbye_soon(self) -> None:
        self._leaving.set()


def _gaps(session: _Flapping) -> list[float]:
    times = [at for _, at in session.attempts]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_each_session_that_registered_moves_to_the_next_replica_at_once() -> None:
    session = _Flapping(["cp-1:18001", "cp-2:18001"])
    async with asyncio.timeout(5):
        await session.run()
    assert [address for address, _ in session.attempts] == ["cp-1:18001", "cp-2:18001"] * 3
    assert max(_gaps(session)) < 0.3  # the old loop waited 0.5, 1, 2, 4, 8 s


async def test_attempts_that_never_register_back_off_after_trying_the_other_replica() -> None:
    session = _Flapping(["cp-1:18001", "cp-2:18001"], register=False)
    assert [session.reopen_delay(n) for n in (1, 2, 3, 4)] == [0.0, 0.5, 1.0, 2.0]
    single = _Flapping(["cp-1:18001"])
    assert [single.reopen_delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
