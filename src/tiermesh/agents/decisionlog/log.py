"""The node's durable, append-only, hash-chained decision log.

:meth:`DecisionLog.append` masks, chains and signs a decision and returns only once its
record is on disk (written and ``fdatasync``-ed): an answer sent after ``append`` returned
can always be matched to a record after a crash or power loss. Concurrent appends are
committed as a group — one write and one fsync for every record that arrived while the
previous batch was being written, plus ``fsync_batch_ms`` of waiting for more when the
previous batch held more than one record (concurrency was seen; a lone appender does not
wait) — so throughput grows with concurrency while each append still waits for its own
fsync.

Only the cheap part of an append runs on the event loop (asking the signer for its
identity, reading the clock, queueing). Masking, sealing (canonical JSON, SHA-256) and the
ECDSA signature are done for the whole batch on the log's writer thread, in arrival order,
right before its write and fsync, so the loop keeps answering while a batch is signed.
Records are chained in the order their appends were called.

**Preallocation.** The segment being written is kept ahead of its data by up to
:data:`PREALLOCATE_BYTES` of written zeros (never past ``segment_bytes`` unless one batch
is larger): a record is then written over blocks the file already owns, so its
``fdatasync`` changes no file metadata and does not wait for a file-system journal
commit (which it shares with every other process's fsyncs). The zeros are extended in the
same write as the batch that needs them, and cut off when the segment is closed or
rolled. Readers stop at the first NUL byte (:func:`~.spool.data_end`); a record line
never holds one.

``fsync_batch_ms`` defaults to 0 (no waiting window): with signing off the loop, batches
already grow with concurrency on their own, and on the disks measured
(``bench/results/audit.md``) a 2 ms window cost throughput and added its own length to the
latency tail. A disk whose fsync is much slower than signing may still gain from one.

**The durable tail in memory.** The last ``recent`` durable records (each with its
signer's fingerprint) stay in memory once their batch is on disk, so the shipper can send
them without reading the spool back and parsing every line again (:meth:`DecisionLog.recent`;
the spool stays the source after a restart or when the shipper falls further behind).

Recovery (:meth:`DecisionLog.start`) reads every segment and checks the chain (seq, links,
hashes; not signatures). A torn last line — a crash in the middle of a write — is cut off
and the chain continues from the last complete record; that record had not been
acknowledged, since its fsync never finished. Any other bad line is corruption: the segment
is copied to ``quarantine/`` (named in the log and in :attr:`DecisionLog.quarantined`), its
good prefix stays in place, every later segment is moved to ``quarantine/`` too, and the
chain continues from the last good record. The agent keeps running.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tiermesh.agents.decisionlog.errors import (
    DecisionLogClosed,
    DecisionLogFailed,
    SpoolCorruptedError,
)
from tiermesh.agents.decisionlog.masking import Masking
from tiermesh.agents.decisionlog.signing import DecisionEntry, Signer, SigningIdentity, seal
from tiermesh.agents.decisionlog.spool import (
    SpooledRecord,
    SpoolPaths,
    data_end,
    encode_line,
    fsync_directory,
    list_segments,
    scan_segment,
    segment_name,
    write_atomic,
)
from tiermesh.controlplane.api.decision import GENESIS_HASH, DecisionRecord

__all__ = [
    "DEFAULT_RECENT",
    "DEFAULT_SEGMENT_BYTES",
    "PREALLOCATE_BYTES",
    "DecisionLog",
    "QuarantinedSegment",
]

log = logging.getLogger("tiermesh.agents.decisionlog")

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
"""Size at which a new segment is started (a soft bound: one batch never splits)."""

PREALLOCATE_BYTES = 1024 * 1024
"""How far ahead of its data the active segment is filled with zeros."""

DEFAULT_RECENT = 2048
"""Durable records kept in memory for the shipper (a few of its batches)."""


@dataclass(frozen=True, slots=True)
class QuarantinedSegment:
    """A segment recovery moved aside: where it is now and what was wrong."""

    segment: Path
    quarantined_to: Path
    line: int | None
    reason: str

    def error(self) -> SpoolCorruptedError:
        return SpoolCorruptedError(
            self.segment, self.line or 0, self.reason, quarantined_to=self.quarantined_to
        )


@dataclass(slots=True)
class _Pending:
    entry: DecisionEntry
    identity: SigningIdentity
    now: dt.datetime
    future: asyncio.Future[DecisionRecord]


@dataclass(slots=True)
class _Sealed:
    """What the writer thread did with one batch, in arrival order."""

    records: list[tuple[_Pending, DecisionRecord]]
    refused: list[tuple[_Pending, Exception]]


@dataclass(frozen=True, slots=True)
class _Recovered:
    next_seq: int
    last_hash: str
    active: Path
    active_size: int
    signers: frozenset[str]
    quarantined: tuple[QuarantinedSegment, ...]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DecisionLog:
    """One node's decision log in ``directory``; see the module docstring.

    Lifecycle: ``await start()`` (or ``async with``), any number of concurrent
    ``append`` calls, ``await close()``. Task safety: bound to the event loop that started
    it; call every method from that loop. One process per directory (not locked: the
    agent owns its spool directory).

    Errors: :class:`DecisionLogClosed` before start / after close; a failed write or fsync
    fails every append of its batch and all later ones with :class:`DecisionLogFailed`.
    A caller cancelled while waiting does not withdraw its record: it was already chained
    and is written with its batch.
    """

    def __init__(
        self,
        directory: str | Path,
        signer: Signer,
        *,
        fsync_batch_ms: float = 0.0,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_batch: int = 4096,
        masking: Masking | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
        recent: int = DEFAULT_RECENT,
    ) -> None:
        if fsync_batch_ms < 0 or segment_bytes <= 0 or max_batch <= 0 or recent < 0:
            raise ValueError(
                "fsync_batch_ms >= 0, segment_bytes > 0, max_batch > 0 and recent >= 0"
            )
        self._paths = SpoolPaths(Path(directory))
        self._signer = signer
        self._batch_s = fsync_batch_ms / 1000
        self._segment_bytes = segment_bytes
        self._max_batch = max_batch
        self._masking = masking if masking is not None else Masking()
        self._now = clock
        self._executor: ThreadPoolExecutor | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._pending: list[_Pending] = []
        self._last_batch = 0
        self._commits = 0
        self._new_signers: dict[str, str] = {}
        self._signers: set[str] = set()
        self._wake = asyncio.Event()
        self._durable = asyncio.Event()
        self._open = False
        self._failed: DecisionLogFailed | None = None
        self._next_seq = 0
        self._last_hash = GENESIS_HASH
        self._durable_seq = -1
        self._active: Path | None = None
        self._active_fd = -1
        self._active_size = 0
        self._allocated = 0
        self._quarantined: tuple[QuarantinedSegment, ...] = ()
        self._recent: collections.deque[SpooledRecord] = collections.deque(maxlen=recent)

    @property
    def directory(self) -> Path:
        return self._paths.root

    @property
    def next_seq(self) -> int:
        """The seq the next record gets once the appends queued so far are sealed."""
        return self._next_seq

    @property
    def durable_seq(self) -> int:
        """Highest seq known to be on disk (-1 when the spool is empty)."""
        return self._durable_seq

    @property
    def commits(self) -> int:
        """Group commits (one write + fdatasync each) since :meth:`start`."""
        return self._commits

    @property
    def quarantined(self) -> tuple[QuarantinedSegment, ...]:
        """Segments the last :meth:`start` moved to ``quarantine/``."""
        return self._quarantined

    async def __aenter__(self) -> DecisionLog:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Recover the spool (see the module docstring) and start accepting appends.

        Raises:
            OSError: the directory cannot be created, read or written.
            RuntimeError: already started.
        """
        if self._open or self._executor is not None:
            raise RuntimeError("decision log already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decisionlog")
        loop = asyncio.get_running_loop()
        try:
            recovered = await loop.run_in_executor(self._executor, self._recover)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._next_seq = recovered.next_seq
        self._durable_seq = recovered.next_seq - 1
        self._last_hash = recovered.last_hash
        self._active = recovered.active
        self._active_size = recovered.active_size
        self._signers = set(recovered.signers)
        self._quarantined = recovered.quarantined
        self._open = True
        self._flusher = asyncio.create_task(self._flush_loop(), name="decisionlog-flush")

    async def close(self) -> None:
        """Write what is pending, stop, and release the files. Idempotent."""
        self._open = False
        if self._flusher is not None:
            self._wake.set()
            await self._flusher
            self._flusher = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._active_fd >= 0:
            self._close_segment()

    async def append(self, entry: DecisionEntry) -> DecisionRecord:
        """Mask, chain and sign ``entry``; return its record once it is durably on disk.

        Raises:
            DecisionLogClosed, DecisionLogFailed; ``pydantic.ValidationError`` or
            ``ValueError`` for parts that break the record contract (nothing is chained
            then); whatever the signer raises (no SVID yet).
        """
        if self._failed is not None:
            raise self._failed
        if not self._open:
            raise DecisionLogClosed(self._paths.root)
        identity = self._signer.identity()
        now = self._now()
        fingerprint = identity.fingerprint
        if fingerprint not in self._signers:
            self._signers.add(fingerprint)
            self._new_signers[fingerprint] = identity.chain_pem()
        future: asyncio.Future[DecisionRecord] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(entry, identity, now, future))
        self._wake.set()
        return await future

    def recent(self, after_seq: int, limit: int) -> list[SpooledRecord] | None:
        """Up to ``limit`` durable records with seq > ``after_seq``, in seq order, from the
        durable tail kept in memory (module docstring): ``[]`` when none is durable yet;
        None when the tail does not reach back to ``after_seq + 1`` (read the spool then).
        Never blocks."""
        want = after_seq + 1
        if want > self._durable_seq or limit <= 0:
            return []
        if not self._recent or want < self._recent[0].record.seq:
            return None
        start = want - self._recent[0].record.seq
        return list(itertools.islice(self._recent, start, start + limit))

    async def wait_durable(self, after_seq: int) -> None:
        """Return once a record with seq > ``after_seq`` is durable (bound it with
        ``asyncio.timeout``)."""
        while self._durable_seq <= after_seq:
            await self._durable.wait()

    def prune(self, acknowledged_seq: int) -> int:
        """Delete segments whose every record has seq <= ``acknowledged_seq`` (never the
        segment being written). Blocking; returns how many were deleted."""
        segments = list_segments(self._paths)
        deleted = 0
        for (_, path), (following_first, _) in itertools.pairwise(segments):
            if following_first - 1 <= acknowledged_seq and path != self._active:
                path.unlink(missing_ok=True)
                deleted += 1
        if deleted:
            fsync_directory(self._paths.segments)
        return deleted

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                if not self._open:
                    return
                continue
            if (
                self._batch_s
                and self._last_batch > 1
                and len(self._pending) < self._max_batch
                and self._open
            ):
                await asyncio.sleep(self._batch_s)
            batch, self._pending = self._pending, []
            self._last_batch = len(batch)
            signers, self._new_signers = self._new_signers, {}
            try:
                sealed = await loop.run_in_executor(
                    self._executor, self._seal_and_write, batch, signers
                )
            except OSError as exc:
                self._fail(batch, exc)
                continue
            for item, error in sealed.refused:
                if not item.future.done():
                    item.future.set_exception(error)
            if sealed.records:
                self._commits += 1
                self._recent.extend(
                    SpooledRecord(record, item.identity.fingerprint)
                    for item, record in sealed.records
                )
                self._durable_seq = sealed.records[-1][1].seq
                self._durable.set()
                self._durable = asyncio.Event()
            for item, record in sealed.records:
                if not item.future.done():
                    item.future.set_result(record)
            if self._pending:
                self._wake.set()

    def _fail(self, batch: list[_Pending], exc: OSError) -> None:
        failed = DecisionLogFailed(self._paths.root, f"write or fsync failed: {exc}")
        log.error("%s; refusing every later append", failed)
        self._failed = failed
        for item in (*batch, *self._pending):
            if not item.future.done():
                item.future.set_exception(failed)
        self._pending = []

    # -- blocking, on the executor thread ------------------------------------------------

    def _seal_and_write(self, batch: list[_Pending], signers: dict[str, str]) -> _Sealed:
        """Chain, sign and durably write ``batch``; entries that break the record contract
        are refused without taking a seq. Owns ``_next_seq``/``_last_hash`` while it runs
        (the loop runs at most one batch at a time)."""
        sealed = _Sealed([], [])
        lines: list[bytes] = []
        seq, prev_hash = self._next_seq, self._last_hash
        for item in batch:
            try:
                record = seal(
                    item.entry,
                    self._masking.apply(item.entry.input),
                    seq=seq,
                    prev_hash=prev_hash,
                    identity=item.identity,
                    now=item.now,
                )
                line = encode_line(record, item.identity.fingerprint)
            except Exception as exc:  # noqa: BLE001 - raised by the append that queued it
                sealed.refused.append((item, exc))
                continue
            sealed.records.append((item, record))
            lines.append(line)
            seq, prev_hash = seq + 1, record.hash
        self._next_seq, self._last_hash = seq, prev_hash
        for fingerprint, chain_pem in signers.items():
            write_atomic(self._paths.signer(fingerprint), chain_pem.encode())
        if lines:
            self._write(lines, sealed.records[0][1].seq)
        return sealed

    def _write(self, lines: list[bytes], first_seq: int) -> None:
        data = b"".join(lines)
        if self._active_size and self._active_size + len(data) > self._segment_bytes:
            self._open_segment(self._paths.segments / segment_name(first_seq))
        elif self._active_fd < 0:
            assert self._active is not None
            self._open_segment(self._active)
        end = self._active_size + len(data)
        if end > self._allocated:
            # Extend the zeros in the same write: one fdatasync makes both durable.
            target = max(end, min(self._active_size + PREALLOCATE_BYTES, self._segment_bytes))
            data += bytes(target - end)
        _pwrite_all(self._active_fd, data, self._active_size)
        os.fdatasync(self._active_fd)
        self._allocated = max(self._allocated, self._active_size + len(data))
        self._active_size = end

    def _close_segment(self) -> None:
        """Cut the active segment's zeros off (durably) and close it."""
        fd, self._active_fd = self._active_fd, -1
        try:
            if self._allocated > self._active_size:
                os.ftruncate(fd, self._active_size)
                os.fsync(fd)
        finally:
            os.close(fd)
            self._allocated = 0

    def _open_segment(self, path: Path) -> None:
        if self._active_fd >= 0:
            self._close_segment()
        existed = path.exists()
        self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        if not existed:
            fsync_directory(path.parent)
            self._active_size = self._allocated = 0
        else:
            self._allocated = os.fstat(self._active_fd).st_size
            self._active_size = data_end(path)
        self._active = path

    def _recover(self) -> _Recovered:
        for directory in (self._paths.root, self._paths.segments, self._paths.signers):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        segments = list_segments(self._paths)
        next_seq, last_hash = 0, GENESIS_HASH
        quarantined: list[QuarantinedSegment] = []
        for index, (first, path) in enumerate(segments):
            is_last = index == len(segments) - 1
            if index == 0:
                next_seq = first
            scan = scan_segment(
                path,
                first_seq=next_seq,
                prev_hash=last_hash if index else None,
                allow_torn=is_last,
            )
            if scan.torn:
                log.warning(
                    "decision log: cut a torn last line off %s at byte %d (a crash mid-write)",
                    path,
                    scan.good_end,
                )
                _truncate(path, scan.good_end)
            if scan.next_seq is not None and scan.last_hash is not None:
                next_seq, last_hash = scan.next_seq, scan.last_hash
            if scan.problem is not None:
                quarantined = self._quarantine(segments[index:], scan.problem, scan.good_end)
                break
        remaining = list_segments(self._paths)
        if remaining:
            active = remaining[-1][1]
            size = data_end(active)
        else:
            active, size = self._paths.segments / segment_name(next_seq), 0
        signers = frozenset(p.stem for p in self._paths.signers.glob("*.pem"))
        return _Recovered(next_seq, last_hash, active, size, signers, tuple(quarantined))

    def _quarantine(
        self, segments: list[tuple[int, Path]], problem: tuple[int, str], good_end: int
    ) -> list[QuarantinedSegment]:
        self._paths.quarantine.mkdir(mode=0o700, exist_ok=True)
        stamp = _utc_now().strftime("%Y%m%dT%H%M%S%fZ")
        moved: list[QuarantinedSegment] = []
        (_, bad), later = segments[0], segments[1:]
        target = self._paths.quarantine / f"{bad.name}.{stamp}.corrupt"
        shutil.copy2(bad, target)
        _truncate(bad, good_end)
        if good_end == 0:
            bad.unlink()
        line, reason = problem
        moved.append(QuarantinedSegment(bad, target, line, reason))
        for _, path in later:
            target = self._paths.quarantine / f"{path.name}.{stamp}.after-corrupt"
            path.replace(target)
            moved.append(QuarantinedSegment(path, target, None, "follows a corrupt segment"))
        fsync_directory(self._paths.quarantine)
        fsync_directory(self._paths.segments)
        for item in moved:
            log.error("decision log: %s", item.error())
        return moved


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
