"""A signed tiny GGUF behind ModelGuard with the real llama.cpp server and the real, signed
decision log: what is served, what is refused, and what the audit record says."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from tests.integration.models.http import call
from tests.unit.decisionlog.helpers import identity_for, new_ca
from tiermesh.agents.decisionlog import (
    DecisionLog,
    StaticSigner,
    load_signers,
    read_spool,
    verify,
)
from tiermesh.agents.models import LlamaServer, write_tiny_gguf
from tiermesh.agents.models.guard import ModelGuard, VerificationOutcome
from tiermesh.agents.runtime.model_trust import verification_entry
from tiermesh.modelsig import KeySigner, generate_key_pair, sign_model

pytestmark = [pytest.mark.model]


@dataclass
class Node:
    """A model behind its guard, with a real decision log."""

    model: Path
    server: LlamaServer
    guard: ModelGuard
    log: DecisionLog
    spool: Path
    outcomes: list[VerificationOutcome]

    def records(self) -> list[dict[str, object]]:
        chains = load_signers(self.spool)
        found = []
        for spooled in read_spool(self.spool):
            verify(spooled.record, chains[spooled.signer])  # intact and signed by the node
            if spooled.record.kind == "model_verification":
                assert isinstance(spooled.record.result, dict)
                found.append(spooled.record.result)
        return found

    def answers(self) -> bool:
        try:
            return call(f"{self.server.base_url}/v1/models", timeout=5).status == 200
        except OSError:
            return False


@dataclass
class Keys:
    folder: Path
    n: int = 0

    def make(self) -> tuple[Path, KeySigner]:
        self.n += 1
        private = self.folder / f"k{self.n}.pem"
        return private, generate_key_pair(private, self.folder / f"k{self.n}.pub")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    folder = tmp_path / "keys"
    folder.mkdir()
    return Keys(folder)


@pytest.fixture
def model(tmp_path: Path, tiny_gguf: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return Path(shutil.copy(tiny_gguf, folder / "tiny.gguf"))


@pytest_asyncio.fixture
async def start_node(
    tmp_path: Path, model: Path
) -> AsyncIterator[Callable[[list[KeySigner]], asyncio.Future[Node]]]:
    started: list[Node] = []
    ca = new_ca()

    async def start(signers: list[KeySigner]) -> Node:
        spool = tmp_path / "decisions"
        log = DecisionLog(spool, StaticSigner(identity_for(ca, "edge-1")))
        await log.start()
        outcomes: list[VerificationOutcome] = []

        async def record(outcome: VerificationOutcome) -> None:
            outcomes.append(outcome)
            await log.append(verification_entry(outcome))

        server = LlamaServer(model, workdir=tmp_path / "logs", ready_timeout_s=60)
        guard = ModelGuard(server, model, signers=signers, on_outcome=record, poll_interval_s=0.05)
        node = Node(model, server, guard, log, spool, outcomes)
        started.append(node)
        await guard.start()
        return node

    yield start  # type: ignore[misc]
    for node in started:
        pid = node.server.pid
        await node.guard.stop()
        await node.server.stop()
        await node.log.close()
        assert pid is None or not psutil.pid_exists(pid)


async def _until(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling state, no event to wait on
            await asyncio.sleep(0.05)


def _flip_byte(path: Path) -> None:
    """Flip one bit in the middle of the file, in place."""
    offset = path.stat().st_size // 2
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))


def _swap_in(model: Path, seed: int) -> None:
    other = write_tiny_gguf(model.with_name("other.gguf"), seed=seed)
    os.replace(other, model)


async def test_a_signed_tiny_gguf_is_served(start_node, keys: Keys, model: Path) -> None:
    private, trusted = keys.make()
    sign_model(model, private_key=private)
    node = await start_node([trusted])
    assert node.guard.healthy
    assert await asyncio.to_thread(node.answers)
    [record] = node.records()
    assert record["outcome"] == "verified"
    assert record["signer"] == trusted.name
    assert str(record["digest"]).startswith("sha256:")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("flipped_byte", "signature_invalid"),
        ("swapped_file", "signature_invalid"),
        ("untrusted_signer", "untrusted_signer"),
        ("missing_signature", "signature_missing"),
    ],
)
async def test_a_refused_model_never_starts_llama_cpp(
    start_node, keys: Keys, model: Path, case: str, reason: str
) -> None:
    private, trusted = keys.make()
    if case == "untrusted_signer":
        stranger, _ = keys.make()
        sign_model(model, private_key=stranger)
    elif case != "missing_signature":
        sign_model(model, private_key=private)
    if case == "flipped_byte":
        _flip_byte(model)
    elif case == "swapped_file":
        _swap_in(model, seed=7)
    node = await start_node([trusted])
    assert node.server.pid is None
    assert node.server.status is None
    assert not node.guard.healthy
    assert not await asyncio.to_thread(node.answers)
    [record] = node.records()
    assert record["outcome"] == "refused"
    assert record["reason"] == reason
    assert record["serving"] is False


async def test_a_resigned_model_is_served_after_the_new_key_is_trusted(
    start_node, keys: Keys, model: Path
) -> None:
    _, old = keys.make()
    new_private, new = keys.make()
    sign_model(model, private_key=new_private)
    node = await start_node([old])
    assert node.server.pid is None
    node.guard.set_trust([old, new])
    await _until(lambda: node.guard.healthy)
    assert await asyncio.to_thread(node.answers)
    outcomes = [(r["outcome"], r["reason"], r["signer"]) for r in node.records()]
    assert outcomes == [
        ("refused", "untrusted_signer", None),
        ("verified", None, new.name),
    ]


async def test_a_file_changed_while_serving_stops_the_server(
    start_node, keys: Keys, model: Path
) -> None:
    private, trusted = keys.make()
    sign_model(model, private_key=private)
    node = await start_node([trusted])
    pid = node.server.pid
    assert pid is not None
    assert await asyncio.to_thread(node.answers)
    _swap_in(model, seed=3)
    await _until(lambda: not node.guard.serving)
    await _until(lambda: not psutil.pid_exists(pid))
    assert node.server.status is None
    assert not await asyncio.to_thread(node.answers)
    # The server is stopped first, the refusal recorded right after.
    await _until(lambda: node.records()[-1]["outcome"] == "refused")
    last = node.records()[-1]
    assert (last["outcome"], last["reason"]) == ("refused", "signature_invalid")
