"""The on-disk spool: segment files of chained records, signer certificates, the cursor.

Layout of a spool directory (owner-only, written by one
:class:`~tiermesh.agents.decisionlog.DecisionLog` at a time)::

    segments/<first seq, 20 digits>.jsonl   records, one JSON line each, in seq order
    signers/<fingerprint>.pem               every SVID chain that signed a record
    quarantine/                             segments moved aside by recovery
    cursor.json                             {"seq": N}: the shipper's last acknowledged seq

A segment line is ``{"fp": "<leaf fingerprint>", "record": {…DecisionRecord…}}\\n``; ``fp``
names the file in ``signers/`` whose key signed it. Only the last segment is ever appended
to; a line without its final newline there is a torn write from a crash. The last segment
may end in NUL bytes (space the writer preallocated); a segment's data ends at its first
NUL byte (:func:`data_end`), which no record line contains.

Everything here is blocking file I/O and keeps no shared state: run it off the event loop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from tiermesh.agents.decisionlog.errors import SpoolCorruptedError
from tiermesh.controlplane.api.decision import DecisionRecord, record_hash

__all__ = [
    "SEGMENT_SUFFIX",
    "SegmentScan",
    "SpoolPaths",
    "SpoolReader",
    "SpooledRecord",
    "data_end",
    "decode_line",
    "encode_line",
    "fsync_directory",
    "list_segments",
    "load_signers",
    "read_cursor",
    "read_spool",
    "scan_segment",
    "segment_name",
    "write_atomic",
    "write_cursor",
]

SEGMENT_SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class SpoolPaths:
    """Where each part of a spool lives."""

    root: Path

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def signers(self) -> Path:
        return self.root / "signers"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def cursor(self) -> Path:
        return self.root / "cursor.json"

    def signer(self, fingerprint: str) -> Path:
        return self.signers / f"{fingerprint}.pem"


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """A record as read from the spool, with the fingerprint of its signer."""

    record: DecisionRecord
    signer: str


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record has ``first_seq``."""
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(paths: SpoolPaths) -> list[tuple[int, Path]]:
    """(first seq, path) of every segment, in seq order. Names that are not segments are
    ignored."""
    if not paths.segments.is_dir():
        return []
    found = []
    for path in paths.segments.iterdir():
        stem = path.name.removesuffix(SEGMENT_SUFFIX)
        if path.name.endswith(SEGMENT_SUFFIX) and stem.isdigit() and len(stem) == 20:
            found.append((int(stem), path))
    return sorted(found)


def _data_of(data: bytes) -> bytes:
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def data_end(path: Path) -> int:
    """Byte offset where the segment's data ends: its first NUL byte, else its size."""
    return len(_data_of(path.read_bytes()))


def encode_line(record: DecisionRecord, signer: str) -> bytes:
    """One segment line for ``record`` signed by ``signer`` (fingerprint)."""
    return b'{"fp":"%s","record":%s}\n' % (signer.encode(), record.model_dump_json().encode())


def decode_line(line: bytes) -> SpooledRecord:
    """Parse one segment line (with or without its newline).

    Raises:
        ValueError: not JSON, not the line shape, or a record that breaks the contract.
    """
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict) or set(value) != {"fp", "record"}:
        raise ValueError("not a spool line (expected the keys fp and record)")
    if not isinstance(value["fp"], str):
        raise ValueError("fp is not a string")
    try:
        record = DecisionRecord.model_validate(value["record"])
    except ValidationError as exc:
        raise ValueError(f"not a decision record: {exc.errors()[0]['msg']}") from exc
    return SpooledRecord(record, value["fp"])


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What :func:`scan_segment` found. ``good_end`` is the byte offset just past the last
    good line; ``problem`` = (1-based line, reason) of the first bad line, if any."""

    count: int
    next_seq: int | None
    last_hash: str | None
    good_end: int
    torn: bool
    problem: tuple[int, str] | None


def scan_segment(
    path: Path, *, first_seq: int, prev_hash: str | None, allow_torn: bool
) -> SegmentScan:
    """Check every line of one segment: parses, ``seq`` follows on, ``prev_hash`` links,
    ``hash`` is right. ``prev_hash`` None accepts any link for the first record (the
    segments before it were pruned). A last line without a newline is ``torn`` when
    ``allow_torn`` (the last segment), else a problem."""
    data = _data_of(path.read_bytes())
    seq, prev, pos, count = first_seq, prev_hash, 0, 0
    line_no = 0
    while pos < len(data):
        line_no += 1
        end = data.find(b"\n", pos)
        if end < 0:
            if allow_torn:
                return SegmentScan(count, seq if count else None, prev, pos, True, None)
            return SegmentScan(count, seq, prev, pos, False, (line_no, "last line has no newline"))
        try:
            spooled = decode_line(data[pos:end])
            _check_link(spooled.record, seq, prev)
        except ValueError as exc:
            return SegmentScan(count, seq, prev, pos, False, (line_no, str(exc)))
        seq, prev, pos, count = seq + 1, spooled.record.hash, end + 1, count + 1
    return SegmentScan(count, seq if count else None, prev, pos, False, None)


def _check_link(record: DecisionRecord, seq: int, prev: str | None) -> None:
    if record.seq != seq:
        raise ValueError(f"seq {record.seq} where {seq} was expected")
    if prev is not None and record.prev_hash != prev:
        raise ValueError(f"seq {seq}: prev_hash does not link to the record before it")
    if record_hash(record) != record.hash:
        raise ValueError(f"seq {seq}: hash does not match the record's content")


def read_spool(root: Path) -> Iterator[SpooledRecord]:
    """Every record of a spool in seq order (read-only; nothing is repaired). Chain links
    and hashes are *not* checked here, so that a verifier can name the bad record; a torn
    last line of the last segment is skipped.

    Raises:
        SpoolCorruptedError: a line that does not parse (naming segment and line).
        FileNotFoundError: ``root`` holds no segments directory.
    """
    paths = SpoolPaths(root)
    if not paths.segments.is_dir():
        raise FileNotFoundError(f"{root} is not a decision-log spool (no segments/)")
    segments = list_segments(paths)
    for index, (_, path) in enumerate(segments):
        with path.open("rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.startswith(b"\0"):
                    break  # preallocated space: the segment's data ends here
                if not line.endswith(b"\n"):
                    if index == len(segments) - 1:
                        return
                    raise SpoolCorruptedError(path, line_no, "last line has no newline")
                try:
                    yield decode_line(line)
                except ValueError as exc:
                    raise SpoolCorruptedError(path, line_no, str(exc)) from exc


def load_signers(root: Path) -> dict[str, str]:
    """Fingerprint → signer chain PEM for every signer file of a spool."""
    paths = SpoolPaths(root)
    if not paths.signers.is_dir():
        return {}
    return {p.stem: p.read_text() for p in sorted(paths.signers.glob("*.pem"))}


def fsync_directory(path: Path) -> None:
    """Make a directory entry change (create, rename, delete) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably: temp file, fsync, rename, fsync directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_directory(path.parent)


def read_cursor(root: Path) -> int:
    """The last acknowledged seq in ``cursor.json``, or -1 when none was acknowledged.

    Raises:
        SpoolCorruptedError: the cursor file is unreadable (never silently reset: that
            would re-ship or skip records).
    """
    path = SpoolPaths(root).cursor
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return -1
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpoolCorruptedError(path, 1, f"cursor is not JSON: {exc}") from exc
    seq = value.get("seq") if isinstance(value, dict) else None
    if not isinstance(seq, int) or seq < -1:
        raise SpoolCorruptedError(path, 1, 'cursor is not {"seq": <int >= -1>}')
    return seq


def write_cursor(root: Path, seq: int) -> None:
    """Durably record ``seq`` as the last acknowledged record."""
    write_atomic(SpoolPaths(root).cursor, json.dumps({"seq": seq}).encode())


class SpoolReader:
    """Reads records after a seq, in order, remembering where it stopped so that the next
    read continues without rescanning. Not thread-safe: one reader per thread of use.

    Reads only complete lines and never past ``durable_seq`` (records the writer has not
    yet fsynced are left for a later read).
    """

    def __init__(self, root: Path) -> None:
        self._paths = SpoolPaths(root)
        self._segment: Path | None = None
        self._offset = 0
        self._next_seq: int | None = None

    def read(self, after_seq: int, limit: int, durable_seq: int) -> list[SpooledRecord]:
        """Up to ``limit`` records with ``after_seq`` < seq <= ``durable_seq``.

        Raises:
            SpoolCorruptedError: a complete line that does not parse.
        """
        want = after_seq + 1
        if want > durable_seq or limit <= 0:
            return []
        if self._next_seq != want or self._segment is None or not self._segment.exists():
            self._seek(want)
        out: list[SpooledRecord] = []
        while len(out) < limit and self._segment is not None:
            got, more = self._read_segment(limit - len(out), durable_seq)
            out.extend(got)
            if more or len(out) >= limit:
                break
            following = self._following_segment()
            if following is None:
                break
            self._segment, self._offset = following, 0
        return out

    def _seek(self, want: int) -> None:
        segments = list_segments(self._paths)
        candidates = [path for first, path in segments if first <= want]
        self._segment = candidates[-1] if candidates else (segments[0][1] if segments else None)
        self._offset = 0
        self._next_seq = want
        if self._segment is None:
            return
        with self._segment.open("rb") as handle:
            while True:
                line = handle.readline()
                if not line.endswith(b"\n"):
                    break
                if decode_line(line).record.seq >= want:
                    break
                self._offset += len(line)

    def _following_segment(self) -> Path | None:
        names = [path for _, path in list_segments(self._paths)]
        if self._segment not in names:
            return names[0] if names else None
        index = names.index(self._segment)
        return names[index + 1] if index + 1 < len(names) else None

    def _read_segment(self, limit: int, durable_seq: int) -> tuple[list[SpooledRecord], bool]:
        """Records from the current position; ``more`` = stopped early (limit or durable
        bound), so the next segment must not be opened yet."""
        assert self._segment is not None
        out: list[SpooledRecord] = []
        with self._segment.open("rb") as handle:
            handle.seek(self._offset)
            line_no = 0
            while len(out) < limit:
                line = handle.readline()
                line_no += 1
                if not line.endswith(b"\n"):
                    return out, bool(line)
                try:
                    spooled = decode_line(line)
                except ValueError as exc:
                    raise SpoolCorruptedError(self._segment, line_no, str(exc)) from exc
                if spooled.record.seq > durable_seq:
                    return out, True
                self._offset += len(line)
                if self._next_seq is not None and spooled.record.seq < self._next_seq:
                    continue
                out.append(spooled)
                self._next_seq = spooled.record.seq + 1
            return out, True
