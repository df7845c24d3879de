"""A multi-member etcd cluster as child processes on loopback, for tests, benchmarks and
``tiermesh up --ha``: members can be killed, stopped, paused and restarted one at a time."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tiermesh.procs.etcd import EtcdNotInstalled, EtcdStartError
from tiermesh.procs.ports import LOOPBACK, free_port

__all__ = ["EtcdCluster"]

_LOG_TAIL_BYTES: Final = 4000
_START_ATTEMPTS: Final = 3
_PROBE_TIMEOUT_S: Final = 1.0
_POLL_S: Final = 0.05


@dataclass
class _Member:
    name: str
    client_port: int
    peer_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    id: str = field(default="")

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """``size`` etcd members (3 by default) on free loopback ports, owned by this object.

    `start` (or ``with``) launches every member with its own client port, peer port and data
    dir under one temp dir, joined by ``--initial-cluster``, and returns once every member is
    healthy (a leader is elected). Members are addressed by index ``0 … size-1``: `kill`
    (SIGKILL), `stop` (SIGTERM), `pause` (SIGSTOP) / `resume` (SIGCONT), and `restart`, which
    starts a stopped or killed member again on the same ports with its data dir, so it
    rejoins as itself. `leader` asks the members' maintenance status API (grpc-gateway JSON,
    no etcdctl). `close` kills every member by PID (resuming paused ones first) and deletes
    the temp dir. `endpoints` stays the same for the cluster's whole life.

    Not thread-safe; one owner. Raises `EtcdNotInstalled` when the binary is missing and
    `EtcdStartError` (with the failing member's log) when the cluster or a restarted member
    is not healthy within ``ready_timeout_s``; a lost port race at start is retried.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        binary: str = "etcd",
        unsafe_no_fsync: bool = False,
        heartbeat_interval_ms: int = 100,
        election_timeout_ms: int = 1000,
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster needs at least one member, got size={size}")
        found = shutil.which(binary)
        if found is None:
            raise EtcdNotInstalled(binary)
        self.binary = found
        self.size = size
        self.unsafe_no_fsync = unsafe_no_fsync
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.election_timeout_ms = election_timeout_ms
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._tmp: Path | None = None
        self._members: list[_Member] = []

    @classmethod
    def for_tests(cls, size: int = 3) -> EtcdCluster:
        """No fsync; 50 ms heartbeat, 500 ms election timeout: for tests, benchmarks and
        ``tiermesh up --ha``.

        Measured on a shared two-core machine (bench/results/etcd_failover.md): no election
        without a fault at 100/1000, 50/500 or 10/50 ms, even with busy loops added, while a
        dead leader is replaced in ~0.5 s at 50/500 against ~1 s at etcd's 100/1000
        defaults. 10/50 ms (what the single-member `EtcdServer.for_tests` uses) was stable
        too, but leaves a member 50 ms of scheduling stall before it calls an election;
        500 ms keeps raft's ten heartbeats per election timeout and rides out a stalled
        process (a suite starting Envoy and llama.cpp beside it).
        """
        return cls(size, unsafe_no_fsync=True, heartbeat_interval_ms=50, election_timeout_ms=500)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every member's ``"127.0.0.1:<client port>"``, in index order (what `EtcdStore`
        takes), whether or not the member runs now."""
        self._require_started()
        return tuple(member.endpoint for member in self._members)

    def endpoint(self, index: int) -> str:
        return self._member(index).endpoint

    def pid(self, index: int) -> int:
        member = self._member(index)
        if member.proc is None:
            raise RuntimeError(f"etcd member {index} is not running")
        return member.proc.pid

    def data_dir(self, index: int) -> Path:
        """Member ``index``'s data dir (kept across `restart`, deleted by `close`)."""
        return self._member(index).dir / "data"

    def running(self, index: int) -> bool:
        return self._member(index).running

    def _member(self, index: int) -> _Member:
        self._require_started()
        if not 0 <= index < len(self._members):
            raise IndexError(f"etcd member index {index} out of range 0..{self.size - 1}")
        return self._members[index]

    def _require_started(self) -> None:
        if not self._members:
            raise RuntimeError("etcd cluster is not started")

    # -- lifetime ----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        if self._members:
            raise RuntimeError("etcd cluster already started")
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except EtcdStartError:
                self.close()
                if attempt == _START_ATTEMPTS:
                    raise

    def _start_once(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="tiermesh-etcd-cluster-"))
        taken: set[int] = set()
        for index in range(self.size):
            ports = []
            for _ in range(2):
                port = free_port()
                while port in taken:
                    port = free_port()
                taken.add(port)
                ports.append(port)
            member_dir = self._tmp / f"member-{index}"
            member_dir.mkdir()
            self._members.append(_Member(f"m{index}", ports[0], ports[1], member_dir))
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self._members)
        for member in self._members:
            self._launch(member, initial_cluster=initial, state="new")
        deadline = time.monotonic() + self.ready_timeout_s
        for member in self._members:
            self._wait_healthy(member, deadline)

    def _command(self, member: _Member, initial_cluster: str, state: str) -> list[str]:
        client = f"http://{member.endpoint}"
        cmd = [
            self.binary,
            f"--name={member.name}",
            f"--data-dir={self.data_dir(self._members.index(member))}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=tiermesh",
            f"--heartbeat-interval={self.heartbeat_interval_ms}",
            f"--election-timeout={self.election_timeout_ms}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if self.unsafe_no_fsync:
            cmd.append("--unsafe-no-fsync")
        return cmd

    def _launch(self, member: _Member, *, initial_cluster: str, state: str) -> None:
        with (member.dir / "etcd.log").open("ab") as log:
            member.proc = subprocess.Popen(
                self._command(member, initial_cluster, state),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=member.dir,
                start_new_session=True,
            )
        member.paused = False

    def _wait_healthy(self, member: _Member, deadline: float) -> None:
        assert member.proc is not None
        while time.monotonic() < deadline:
            if member.proc.poll() is not None:
                raise EtcdStartError(
                    f"member {member.name} exited with code {member.proc.returncode}",
                    self.log_tail(self._members.index(member)),
                )
            if self._healthy(member):
                return
            time.sleep(_POLL_S)
        raise EtcdStartError(
            f"member {member.name} not healthy after {self.ready_timeout_s} s",
            self.log_tail(self._members.index(member)),
        )

    def _request(self, member: _Member, method: str, path: str, body: bytes | None) -> bytes:
        """One HTTP request to a member's client port; raises OSError on any failure."""
        conn = http.client.HTTPConnection(LOOPBACK, member.client_port, timeout=_PROBE_TIMEOUT_S)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise OSError(f"{method} {path}: HTTP {response.status}")
        return payload

    def _healthy(self, member: _Member) -> bool:
        try:
            body = self._request(member, "GET", "/health", None)
        except OSError:
            return False
        return b'"health":"true"' in body

    def healthy(self, index: int) -> bool:
        """Whether member ``index`` answers ``/health`` (it runs and sees a leader)."""
        member = self._member(index)
        return member.running and not member.paused and self._healthy(member)

    def _status(self, member: _Member) -> tuple[str, str, int] | None:
        """``(member id, leader id, raft term)`` from the member's maintenance status, or
        None when it does not answer."""
        try:
            body = self._request(member, "POST", "/v3/maintenance/status", b"{}")
            doc = json.loads(body)
            member_id, leader_id = str(doc["header"]["member_id"]), str(doc.get("leader", "0"))
            term = int(doc.get("raftTerm", 0))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        member.id = member_id
        return member_id, leader_id, term

    def raft_term(self) -> int:
        """The highest raft term a running member reports (each election raises it), or 0
        when none answers: a way to count elections."""
        terms = [
            status[2]
            for member in self._members
            if member.running and not member.paused
            if (status := self._status(member)) is not None
        ]
        return max(terms, default=0)

    def leader(self) -> int | None:
        """Index of the member that the running, unpaused members agree leads, or None when
        no member answers or they name no member of this cluster (an election is under
        way)."""
        named: set[str] = set()
        for member in self._members:
            if member.running and not member.paused:
                status = self._status(member)
                if status is not None and status[1] != "0":
                    named.add(status[1])
        if len(named) != 1:
            return None
        (leader_id,) = named
        for index, member in enumerate(self._members):
            if member.id == leader_id and member.running and not member.paused:
                return index
        return None

    def wait_for_leader(self, timeout_s: float = 10.0, *, other_than: int | None = None) -> int:
        """Poll `leader` until the members agree on one (not ``other_than``); its index.

        Raises TimeoutError naming the wait when none is agreed within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.leader()
            if found is not None and found != other_than:
                return found
            time.sleep(_POLL_S)
        raise TimeoutError(f"no etcd leader agreed on within {timeout_s} s")

    def wait_healthy(self, index: int, timeout_s: float | None = None) -> None:
        """Return once member ``index`` answers ``/health``; `EtcdStartError` otherwise."""
        wait = self.ready_timeout_s if timeout_s is None else timeout_s
        self._wait_healthy(self._member(index), time.monotonic() + wait)

    # -- faults ------------------------------------------------------------------------------

    def _signal(self, member: _Member, sig: signal.Signals) -> None:
        if member.proc is None or member.proc.poll() is not None:
            raise RuntimeError(f"etcd member {member.name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(member.proc.pid, sig)

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` and reap it; its data dir stays for `restart`."""
        member = self._member(index)
        self._signal(member, signal.SIGKILL)
        self._reap(member)

    def stop(self, index: int) -> None:
        """SIGTERM member ``index`` (SIGKILL after ``stop_timeout_s``) and reap it."""
        member = self._member(index)
        if member.paused:
            self.resume(index)
        self._signal(member, signal.SIGTERM)
        self._reap(member)

    def _reap(self, member: _Member) -> None:
        proc = member.proc
        if proc is None:
            return
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        member.proc = None
        member.paused = False

    def pause(self, index: int) -> None:
        """SIGSTOP member ``index``: it keeps its sockets but answers nothing."""
        member = self._member(index)
        self._signal(member, signal.SIGSTOP)
        member.paused = True

    def resume(self, index: int) -> None:
        """SIGCONT a paused member ``index``."""
        member = self._member(index)
        self._signal(member, signal.SIGCONT)
        member.paused = False

    def restart(self, index: int, *, wait: bool = True) -> None:
        """Start member ``index`` again (stopping it first if it runs) on its old ports with
        its data dir; with ``wait``, return once it is healthy."""
        member = self._member(index)
        if member.running:
            self.stop(index)
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self._members)
        self._launch(member, initial_cluster=initial, state="existing")
        if wait:
            self._wait_healthy(member, time.monotonic() + self.ready_timeout_s)

    def log_tail(self, index: int) -> str:
        """The last few KB of member ``index``'s log ("" once closed)."""
        if not self._members:
            return ""
        try:
            with (self._members[index].dir / "etcd.log").open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Kill every member by PID (paused ones are resumed first so they die at once),
        reap them and delete the temp dir. Idempotent."""
        members, self._members = self._members, []
        for member in members:
            proc = member.proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                    os.kill(proc.pid, signal.SIGCONT)
        for member in members:
            if member.proc is not None:
                member.proc.wait()
                member.proc = None
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
