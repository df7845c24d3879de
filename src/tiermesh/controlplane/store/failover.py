"""Talking to an etcd cluster through whichever member answers: endpoint list, one aetcd
client per member, failure classification and the retry loop `EtcdStore` runs every call in.

aetcd's client speaks to one ``host:port``, so the cluster is a list of clients of which one
is current. A call runs on the current member; when that member fails it (refused, reset,
no leader, no answer within the attempt timeout) the pool moves on to the next member, and
the call is tried again there if that is safe (`Retry`) and its deadline allows.

Retry policy, by what a repeat could do:

* `Retry.ALWAYS` — reads, watches, lease grants, keep-alives and revocations, and a node
  writing its own registration (its own key, the same value, under its own lease). Repeating
  them changes nothing (a grant whose answer was lost leaves an orphan lease with no keys,
  which expires after its TTL; a registration written twice shows as a second watch event
  with the same value).
* `Retry.IF_UNSENT` — every other write of a key: plain puts and deletes, and
  compare-and-swap transactions too. They are repeated only when the failure shows the request never
  reached the cluster (the connection could not be made, or the member said it has no
  leader). After a failure that leaves the outcome unknown (a deadline, a stream reset in
  flight, "request timed out") a blind repeat could apply a write twice: a usage increment
  would be counted twice, a plain put could overwrite a later writer's value and emit a
  second watch event, a create would report `KeyExists` for its own key. So the call raises
  `StoreUnavailable` (whose contract already says a write's outcome is unknown) and the
  *next* call goes to another member.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import aetcd
import grpc

from tiermesh.controlplane.store.errors import StoreRequestFailed, StoreUnavailable

__all__ = ["MemberPool", "Retry", "classify", "failure_detail", "parse_endpoints"]

T = TypeVar("T")

_CHANNEL_OPTIONS: Final = {
    # A member that comes back is found within a second, not after gRPC's default
    # reconnect backoff (which grows to two minutes).
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}
_UNSENT_MARKERS: Final = (
    "failed to connect",
    "connection refused",
    "connections to all backends failing",
    "etcdserver: no leader",
    "etcdserver: too many requests",
    "etcdserver: not capable",
)
"""Failure details that show a request was not applied: nothing reached raft."""
_MEMBER_MARKERS: Final = (
    "etcdserver: no leader",
    "etcdserver: leader changed",
    "etcdserver: request timed out",
    "etcdserver: too many requests",
    "etcdserver: not capable",
    "etcdserver: server stopped",
)
"""Failure details of an answering member that another member may not share."""
_ROUND_PAUSE_S: Final = 0.1
"""Pause after every member failed once, so an outage is not a busy loop."""


class Retry(enum.Enum):
    """When a call may be repeated on another member (see the module docstring)."""

    ALWAYS = "always"
    IF_UNSENT = "if_unsent"


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[str, ...]:
    """``"h:p"``, ``"h:p,h:p"`` or a sequence of those → normalised ``"host:port"`` tuple.

    Raises ValueError naming the bad item (empty, no port, non-numeric port) or a repeat.
    """
    items = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    parsed: list[str] = []
    for item in items:
        for part in item.split(","):
            text = part.strip()
            host, sep, port = text.removeprefix("http://").rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"etcd endpoint must be 'host:port', got {text!r}")
            normal = f"{host}:{int(port)}"
            if normal in parsed:
                raise ValueError(f"etcd endpoint {normal!r} is given twice")
            parsed.append(normal)
    if not parsed:
        raise ValueError("at least one etcd endpoint is needed")
    return tuple(parsed)


class _MemberFailure(Exception):
    """A call failed because of the member it ran on; another member may do better."""

    def __init__(self, detail: str, *, unsent: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.unsent = unsent


def failure_detail(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def classify(exc: BaseException) -> _MemberFailure | None:
    """The member failure ``exc`` is, or None when it is the request's own problem."""
    if isinstance(exc, aetcd.RevisionCompactedError):
        return None
    if isinstance(exc, TimeoutError | aetcd.WatchTimeoutError | aetcd.ConnectionTimeoutError):
        return _MemberFailure(f"no answer in time ({type(exc).__name__})", unsent=False)
    detail = failure_detail(exc)
    lowered = detail.lower()
    unsent = any(marker in lowered for marker in _UNSENT_MARKERS)
    if isinstance(exc, aetcd.ConnectionFailedError) or (
        isinstance(exc, grpc.aio.AioRpcError)
        and exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    ):
        return _MemberFailure(detail, unsent=unsent)
    if isinstance(exc, aetcd.ClientError | grpc.aio.AioRpcError) and any(
        marker in lowered for marker in _MEMBER_MARKERS
    ):
        return _MemberFailure(detail, unsent=unsent)
    return None


class MemberPool:
    """The members of one etcd cluster and which of them calls go to now.

    Owns one aetcd client per endpoint, created on first use; `aclose` closes them all. Bound
    to one event loop; safe for concurrent tasks on it (a failure moves the pool on only
    if no other task has moved it since). ``attempt_timeout_s`` bounds one try on one member,
    ``timeout_s`` a whole call over all its tries.
    """

    def __init__(
        self, endpoints: Sequence[str], *, timeout_s: float, attempt_timeout_s: float
    ) -> None:
        if timeout_s <= 0 or attempt_timeout_s <= 0:
            raise ValueError(
                f"timeouts must be > 0, got timeout_s={timeout_s} "
                f"attempt_timeout_s={attempt_timeout_s}"
            )
        self.endpoints = tuple(endpoints)
        self.timeout_s = timeout_s
        self.attempt_timeout_s = min(attempt_timeout_s, timeout_s)
        self._clients: dict[int, Any] = {}
        self._current = 0
        self._closed = False

    @property
    def current(self) -> int:
        return self._current

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        return self.endpoints[self._current]

    @property
    def closed(self) -> bool:
        return self._closed

    def client(self, index: int) -> Any:
        """The aetcd client of member ``index`` (created, not yet connected, on first use)."""
        if self._closed:
            raise StoreUnavailable(self.named(), "store is closed")
        found = self._clients.get(index)
        if found is None:
            host, _, port = self.endpoints[index].rpartition(":")
            found = aetcd.Client(
                host=host,
                port=int(port),
                timeout=self.attempt_timeout_s,
                options=dict(_CHANNEL_OPTIONS),
            )
            self._clients[index] = found
        return found

    def index_of(self, client: Any) -> int:
        """The member index of a client this pool made."""
        for index, made in self._clients.items():
            if made is client:
                return index
        raise ValueError("client not made by this pool")

    def move_on(self, failed: int) -> None:
        """Member ``failed`` failed a call: use the next one, unless already moved."""
        if self._current == failed:
            self._current = (failed + 1) % len(self.endpoints)

    def named(self) -> str:
        """The endpoint for error messages: the one, or every one comma-separated."""
        return ",".join(self.endpoints)

    async def call(
        self,
        operation: str,
        attempt: Callable[[Any], Awaitable[T]],
        *,
        retry: Retry,
    ) -> T:
        """Run ``attempt(client)`` on the current member, moving on as the policy allows.

        Every try is bounded by ``attempt_timeout_s`` and all of them by ``timeout_s``; tries
        are at most three rounds of the members. Raises `StoreUnavailable` naming every
        endpoint (with what each did) when no member served it, and `StoreRequestFailed`
        (caused by the client's exception) for a failure that is the request's own.
        """
        deadline = time.monotonic() + self.timeout_s
        problems: dict[str, str] = {}
        tries = 3 * len(self.endpoints)
        for number in range(tries):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            index = self._current
            try:
                async with asyncio.timeout(min(self.attempt_timeout_s, remaining)):
                    return await attempt(self.client(index))
            except StoreUnavailable:
                raise
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise StoreRequestFailed(operation, failure_detail(exc)) from exc
                problems[self.endpoints[index]] = failure.detail
                self.move_on(index)
                if retry is Retry.IF_UNSENT and not failure.unsent:
                    raise self.unavailable(
                        problems, f"{operation} outcome unknown, not retried"
                    ) from exc
            if (number + 1) % len(self.endpoints) == 0:
                await asyncio.sleep(min(_ROUND_PAUSE_S, max(0.0, deadline - time.monotonic())))
        raise self.unavailable(problems, f"{operation} found no member that answered")

    def unavailable(self, problems: dict[str, str], summary: str) -> StoreUnavailable:
        """`StoreUnavailable` naming every endpoint, with each one's last problem."""
        if len(self.endpoints) == 1:
            return StoreUnavailable(self.endpoints[0], problems.get(self.endpoints[0], summary))
        seen = "; ".join(f"{ep}: {problems.get(ep, 'not tried')}" for ep in self.endpoints)
        return StoreUnavailable(self.named(), f"{summary} ({seen})")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        clients, self._clients = self._clients, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2.0)
