"""Serve a model file only while a trusted signer's signature vouches for its bytes.

`ModelGuard` owns the node's model server (anything with ``start``/``stop`` and a
``status``, e.g. `~tiermesh.agents.models.LlamaServer`) and decides whether it may run:

- **Before the first start** the file is verified (`tiermesh.modelsig.verify_model`)
  against the trusted signers. A missing, invalid or untrusted signature leaves the server
  stopped: `healthy` is False (the node reports its backend unhealthy and the control plane
  routes around it) and `start` still returns, so the rest of the node comes up.
- **Pinning.** After the server answered, the file's fingerprint (device, inode, size,
  mtime, ctime of the model and its signature) is compared with the verified one; a file
  swapped or written between verification and load stops the server again.
- **On change** (polled every ``poll_interval_s``: one ``stat`` per file) the server is
  stopped first, then the file verified again, and started again only when it verifies.
  A new set of trusted signers (`set_trust`, e.g. from a new catalog) is verified the
  same way; a model that still verifies keeps serving without a restart.
- Every verification's outcome goes to ``on_outcome`` (the agent writes it as a signed
  ``model_verification`` record to its decision log); exceptions there are logged.

Without trusted signers and without ``required`` the model is served unverified
(outcome ``unverified``), as before signatures existed. Use from one event loop; `stop` is
idempotent and leaves no server running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from tiermesh.agents.supervisor import SupervisorStatus
from tiermesh.modelsig import (
    Fingerprint,
    ModelSignatureError,
    TrustedSigner,
    Verified,
    default_signature_path,
    fingerprint,
    verify_model,
)
from tiermesh.tasks import cancel_and_wait

__all__ = ["GuardedServer", "ModelGuard", "VerificationOutcome"]

log = logging.getLogger("tiermesh.agent")

Trigger = Literal["start", "changed", "trust", "loaded"]
"""Why a verification ran: the first start, a changed file, new trusted signers, or the
check after the server loaded the file."""


class GuardedServer(Protocol):
    """What the guard needs of a model server."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def status(self) -> SupervisorStatus | None: ...


@dataclass(frozen=True, slots=True)
class VerificationOutcome:
    """One verification and what the guard did with it. ``outcome``: ``verified`` (served),
    ``unverified`` (served, nothing demanded), ``refused`` (not served; ``reason`` is a
    `ModelSignatureError` reason such as ``signature_missing``, ``signature_invalid``,
    ``untrusted_signer``, ``model_changed``, or ``server_failed``)."""

    model: Path
    signature: Path
    outcome: Literal["verified", "unverified", "refused"]
    trigger: Trigger
    digest: str | None = None
    signer: str | None = None
    reason: str | None = None
    detail: str | None = None
    trusted: tuple[str, ...] = ()

    @property
    def serving(self) -> bool:
        return self.outcome != "refused"

    def to_json(self) -> dict[str, object]:
        return {
            "model": str(self.model),
            "signature": str(self.signature),
            "outcome": self.outcome,
            "trigger": self.trigger,
            "digest": self.digest,
            "signer": self.signer,
            "reason": self.reason,
            "detail": self.detail,
            "trusted": list(self.trusted),
            "serving": self.serving,
        }


OutcomeCallback = Callable[[VerificationOutcome], Awaitable[None]]


def _stat(model: Path, signature: Path) -> Fingerprint | None:
    try:
        return fingerprint(model, signature)
    except OSError:
        return None


class ModelGuard:
    """See the module docstring."""

    def __init__(
        self,
        server: GuardedServer,
        model: Path,
        *,
        signers: Sequence[TrustedSigner] = (),
        required: bool = False,
        signature: Path | None = None,
        on_outcome: OutcomeCallback | None = None,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.server = server
        self.model = Path(model)
        self.signature = signature or default_signature_path(self.model)
        self._signers = tuple(signers)
        self._required = required
        self._on_outcome = on_outcome
        self.poll_interval_s = poll_interval_s
        self.last: VerificationOutcome | None = None
        """The latest verification's outcome (None before the first)."""
        self._pinned: Fingerprint | None = None
        self._running = False
        self._watch: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._trust_changed = False
        self._lock = asyncio.Lock()
        self.verifications = 0

    # -- queries -----------------------------------------------------------------------------

    @property
    def required(self) -> bool:
        """Is a valid signature demanded (trusted signers named, or ``required``)?"""
        return self._required or bool(self._signers)

    @property
    def serving(self) -> bool:
        """Is the server running on a model the guard let through?"""
        return self._running

    @property
    def healthy(self) -> bool:
        """Serving, and the server's supervisor reports it healthy."""
        status = self.server.status
        return self._running and status is not None and status.healthy

    # -- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Verify, start the server when allowed, then watch. Raises only what the server's
        own start raises for a model that was allowed (as without signatures)."""
        async with self._lock:
            await self._admit("start", raise_server_errors=True)
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(), name="model-guard")

    def set_trust(self, signers: Sequence[TrustedSigner], *, required: bool | None = None) -> None:
        """New trusted signers (and demand); verified again on the watch task. No-op when
        nothing changed."""
        signers = tuple(signers)
        demand = self._required if required is None else required
        if signers == self._signers and demand == self._required:
            return
        self._signers, self._required = signers, demand
        self._trust_changed = True
        self._wake.set()

    async def stop(self) -> None:
        """Stop watching and stop the server. Idempotent."""
        watch, self._watch = self._watch, None
        await cancel_and_wait([watch])
        async with self._lock:
            self._running = False
            await self.server.stop()

    # -- internals ---------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            trust, self._trust_changed = self._trust_changed, False
            now = _stat(self.model, self.signature)
            changed = now != self._pinned
            if not changed and not trust:
                continue
            async with self._lock:
                try:
                    if changed:
                        if self._running:
                            log.warning("model %s changed while served: stopping it", self.model)
                        await self._stop_server()
                        await self._admit("changed")
                    else:
                        await self._admit("trust")
                except Exception:
                    log.exception("verifying %s failed", self.model)

    async def _admit(self, trigger: Trigger, *, raise_server_errors: bool = False) -> None:
        """Verify; stop or (re)start the server to match. Holds ``_lock``."""
        outcome, verified = await self._verify(trigger)
        self._pinned = verified.fingerprint if verified is not None else self._current()
        if not outcome.serving:
            await self._stop_server()
            await self._report(outcome)
            return
        await self._report(outcome)
        if self._running:
            return
        try:
            await self.server.start()
        except Exception as exc:
            await self._stop_server()
            await self._report(self._refused(trigger, "server_failed", str(exc)))
            if raise_server_errors:
                raise
            return
        self._running = True
        # The server read the file after verification: pin what it loaded.
        if self._current() != self._pinned:
            await self._stop_server()
            await self._report(
                self._refused(
                    "loaded", "model_changed", "the model changed between verification and load"
                )
            )
            self._pinned = None  # verified again on the next tick

    def _current(self) -> Fingerprint | None:
        return _stat(self.model, self.signature)

    async def _verify(self, trigger: Trigger) -> tuple[VerificationOutcome, Verified | None]:
        self.verifications += 1
        signers = self._signers
        trusted = tuple(s.name for s in signers)
        if not self.required:
            return (
                VerificationOutcome(self.model, self.signature, "unverified", trigger),
                None,
            )
        try:
            verified = await asyncio.to_thread(
                verify_model, self.model, signers, signature=self.signature
            )
        except ModelSignatureError as exc:
            return self._refused(trigger, exc.reason, exc.detail), None
        outcome = VerificationOutcome(
            self.model,
            self.signature,
            "verified",
            trigger,
            digest=verified.digest,
            signer=verified.signer,
            trusted=trusted,
        )
        return outcome, verified

    def _refused(self, trigger: Trigger, reason: str, detail: str) -> VerificationOutcome:
        return VerificationOutcome(
            self.model,
            self.signature,
            "refused",
            trigger,
            reason=reason,
            detail=detail,
            trusted=tuple(s.name for s in self._signers),
        )

    async def _report(self, outcome: VerificationOutcome) -> None:
        self.last = outcome
        if outcome.outcome == "refused":
            log.warning(
                "model %s not served: %s (%s)", outcome.model, outcome.reason, outcome.detail
            )
        if self._on_outcome is None:
            return
        try:
            await self._on_outcome(outcome)
        except Exception:
            log.exception("recording the verification of %s failed", outcome.model)

    async def _stop_server(self) -> None:
        if self._running or self.server.status is not None:
            self._running = False
            await self.server.stop()
