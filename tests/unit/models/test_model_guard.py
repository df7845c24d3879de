"""ModelGuard with an in-memory model server: what is started, stopped and reported for
each signature outcome, file change and trust change. (Real llama.cpp:
tests/integration/models/test_signed_model.py.)"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tiermesh.agents.models.guard import ModelGuard, VerificationOutcome
from tiermesh.agents.supervisor import ProcessState, SupervisorStatus
from tiermesh.modelsig import KeySigner, generate_key_pair, sign_model


class FakeServer:
    def __init__(self) -> None:
        self._status: SupervisorStatus | None = None
        self.starts = 0
        self.stops = 0
        self.during_start: Callable[[], None] | None = None

    @property
    def status(self) -> SupervisorStatus | None:
        return self._status

    async def start(self) -> None:
        self.starts += 1
        if self.during_start is not None:
            self.during_start()
        self._status = SupervisorStatus(name="fake", state=ProcessState.RUNNING, pid=1)

    async def stop(self) -> None:
        self.stops += 1
        self._status = None


class Keys:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.n = 0

    def make(self) -> tuple[Path, KeySigner]:
        self.n += 1
        private = self.folder / f"k{self.n}.pem"
        return private, generate_key_pair(private, self.folder / f"k{self.n}.pub")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + os.urandom(4096))
    return path


def _guard(
    model: Path, signers: list[KeySigner], outcomes: list[VerificationOutcome], **kw: object
) -> tuple[ModelGuard, FakeServer]:
    server = FakeServer()

    async def record(outcome: VerificationOutcome) -> None:
        outcomes.append(outcome)

    guard = ModelGuard(
        server,
        model,
        signers=signers,
        on_outcome=record,
        poll_interval_s=0.02,
        **kw,  # type: ignore[arg-type]
    )
    return guard, server


def _flip(path: Path, offset: int) -> None:
    """Flip one byte in place (same inode)."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x80]))


async def _until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling state, no event to wait on
            await asyncio.sleep(0.01)


async def test_a_verified_model_is_served(keys: Keys, model: Path) -> None:
    private, signer = keys.make()
    sign_model(model, private_key=private)
    outcomes: list[VerificationOutcome] = []
    guard, server = _guard(model, [signer], outcomes)
    await guard.start()
    try:
        assert (server.starts, guard.healthy) == (1, True)
        assert [o.outcome for o in outcomes] == ["verified"]
        assert outcomes[0].signer == signer.name
        assert outcomes[0].digest is not None
    finally:
        await guard.stop()
    assert server.status is None


@pytest.mark.parametrize("case", ["missing", "untrusted", "flipped"])
async def test_a_refused_model_is_never_started(keys: Keys, model: Path, case: str) -> None:
    private, signer = keys.make()
    if case == "untrusted":
        stranger, _ = keys.make()
        sign_model(model, private_key=stranger)
    elif case == "flipped":
        sign_model(model, private_key=private)
        _flip(model, 10)
    outcomes: list[VerificationOutcome] = []
    guard, server = _guard(model, [signer], outcomes)
    await guard.start()
    try:
        await asyncio.sleep(0.1)  # a few polls: nothing changes, nothing starts
        assert (server.starts, guard.healthy, guard.serving) == (0, False, False)
        reasons = {
            "missing": "signature_missing",
            "untrusted": "untrusted_signer",
            "flipped": "signature_invalid",
        }
        assert [(o.outcome, o.reason) for o in outcomes] == [("refused", reasons[case])]
    finally:
        await guard.stop()


async def test_a_change_while_serving_stops_the_server(keys: Keys, model: Path) -> None:
    private, signer = keys.make()
    sign_model(model, private_key=private)
    outcomes: list[VerificationOutcome] = []
    guard, server = _guard(model, [signer], outcomes)
    await guard.start()
    try:
        _flip(model, 20)
        await _until(lambda: len(outcomes) == 2)
        assert (server.status, guard.healthy) == (None, False)
        assert (outcomes[1].outcome, outcomes[1].trigger) == ("refused", "changed")
        assert outcomes[1].reason == "signature_invalid"
        # Re-signed by the trusted key: served again.
        sign_model(model, private_key=private)
        await _until(lambda: guard.healthy)
        assert outcomes[-1].outcome == "verified"
        assert server.starts == 2
    finally:
        await guard.stop()


async def test_a_resigned_model_is_served_once_the_new_key_is_trusted(
    keys: Keys, model: Path
) -> None:
    old_private, old = keys.make()
    new_private, new = keys.make()
    sign_model(model, private_key=old_private)
    outcomes: list[VerificationOutcome] = []
    guard, _ = _guard(model, [old], outcomes)
    await guard.start()
    try:
        sign_model(model, private_key=new_private)
        await _until(lambda: len(outcomes) == 2)
        assert (outcomes[1].reason, guard.healthy) == ("untrusted_signer", False)
        guard.set_trust([old, new])
        await _until(lambda: guard.healthy)
        assert (outcomes[-1].outcome, outcomes[-1].trigger) == ("verified", "trust")
        assert outcomes[-1].signer == new.name
    finally:
        await guard.stop()


async def test_trust_withdrawn_stops_a_served_model(keys: Keys, model: Path) -> None:
    private, signer = keys.make()
    _, other = keys.make()
    sign_model(model, private_key=private)
    outcomes: list[VerificationOutcome] = []
    guard, server = _guard(model, [signer], outcomes)
    await guard.start()
    try:
        guard.set_trust([other])
        await _until(lambda: not guard.serving)
        assert server.status is None
        assert outcomes[-1].reason == "untrusted_signer"
    finally:
        await guard.stop()


async def test_a_swap_between_verification_and_load_is_caught(keys: Keys, model: Path) -> None:
    private, signer = keys.make()
    sign_model(model, private_key=private)
    outcomes: list[VerificationOutcome] = []
    guard, server = _guard(model, [signer], outcomes)
    swapped = model.with_name("swap.gguf")
    swapped.write_bytes(b"GGUF evil")

    def swap() -> None:
        os.replace(swapped, model)
        server.during_start = None

    server.during_start = swap
    await guard.start()
    try:
        assert not guard.serving
        assert [(o.outcome, o.trigger, o.reason) for o in outcomes[:2]] == [
            ("verified", "start", None),
            ("refused", "loaded", "model_changed"),
        ]
        await _until(lambda: len(outcomes) >= 3)
        assert (outcomes[2].outcome, outcomes[2].reason) == ("refused", "signature_invalid")
        assert server.status is None
    finally:
        await guard.stop()


async def test_nothing_demanded_serves_unverified(model: Path) -> None:
    outcomes: list[VerificationOutcome] = []
    guard, _ = _guard(model, [], outcomes)
    await guard.start()
    try:
        assert guard.healthy
        assert [o.outcome for o in outcomes] == ["unverified"]
    finally:
        await guard.stop()


async def test_required_without_signers_serves_nothing(model: Path) -> None:
    outcomes: list[VerificationOutcome] = []
    guard, server = _guard(model, [], outcomes, required=True)
    await guard.start()
    try:
        assert server.starts == 0
        assert outcomes[0].reason in {"signature_missing", "untrusted_signer"}
    finally:
        await guard.stop()
