"""Simulated Envoy ADS clients for ``bench/xds_fanout.py``: one worker process, many nodes.

Each node is its own ADS stream with its own node id and subscribes the way Envoy does:
CDS wildcard, then EDS for the EDS clusters it got, then LDS wildcard, then RDS for the route
names its listeners reference. It ACKs every response with the response's nonce and
remembers, per type, the version it ACKed last and when (``time.monotonic()``, which all
processes on one Linux machine share).

The worker talks to the benchmark's main process over a pipe:
``ready`` → (``go``) → ``started`` → (``report``) → ``acks`` → (``stop``) → exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2

from tiermesh.xds import typeurls

CDS, EDS, LDS, RDS = typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE
SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
MAX_RETRIES = 50

DiscoveryRequest = discovery_pb2.DiscoveryRequest
DiscoveryResponse = discovery_pb2.DiscoveryResponse
DeltaRequest = discovery_pb2.DeltaDiscoveryRequest
DeltaResponse = discovery_pb2.DeltaDiscoveryResponse


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit to the hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def node_id(index: int) -> str:
    return f"node-{index:05d}"


def node_group(index: int, groups: int) -> str:
    return f"group-{index % groups:02d}"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    worker: int
    nodes: tuple[int, ...]
    """Node indexes this worker simulates."""
    groups: int
    delta: bool
    streams_per_channel: int
    stop_after_s: float
    """The worker exits by itself after this long, whatever the main process does."""


@dataclass(slots=True)
class NodeState:
    """What one simulated Envoy holds and has ACKed."""

    node: base_pb2.Node
    acked: dict[str, tuple[str, float]] = field(default_factory=dict)
    """type URL → (version ACKed last, monotonic time the ACK was sent)."""
    responses: int = 0
    failures: int = 0
    """Streams of this node that ended (each is retried, as Envoy does)."""
    error: str = ""
    """How the last failed stream ended."""


def _eds_name(cluster: cluster_pb2.Cluster) -> str | None:
    """The name Envoy asks EDS for: EDS clusters only (not aggregate, DNS or static)."""
    return cluster.name if cluster.type == cluster_pb2.Cluster.EDS else None


def _cluster_names(packed: Any) -> list[str]:
    names = (_eds_name(cluster_pb2.Cluster.FromString(r.value)) for r in packed)
    return [name for name in names if name is not None]


def _route_names(listeners: Any) -> set[str]:
    out: set[str] = set()
    for listener in listeners:
        for chain in listener.filter_chains:
            for flt in chain.filters:
                if flt.typed_config.type_url.endswith("HttpConnectionManager"):
                    manager = hcm_pb2.HttpConnectionManager.FromString(flt.typed_config.value)
                    if manager.HasField("rds"):
                        out.add(manager.rds.route_config_name)
    return out


async def run_sotw(call: Any, state: NodeState) -> None:
    """Envoy's SotW request sequence on one stream, until the stream ends."""
    names: dict[str, list[str]] = {}
    last: dict[str, tuple[str, str]] = {}
    """type URL → (version, nonce) of the last response received."""

    async def request(type_url: str, resource_names: list[str], *, first: bool = False) -> None:
        names[type_url] = resource_names
        version, nonce = last.get(type_url, ("", ""))
        await call.write(
            DiscoveryRequest(
                node=state.node if first else None,
                type_url=type_url,
                resource_names=resource_names,
                version_info=version,
                response_nonce=nonce,
            )
        )

    await request(CDS, [], first=True)
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            return
        state.responses += 1
        type_url = response.type_url
        last[type_url] = (response.version_info, response.nonce)
        follow: tuple[str, list[str]] | None = None
        if type_url == CDS:
            wanted = sorted(_cluster_names(response.resources))
            if wanted != names.get(EDS):
                follow = (EDS, wanted)
        elif type_url == EDS and LDS not in names:
            follow = (LDS, [])
        elif type_url == LDS:
            listeners = [listener_pb2.Listener.FromString(r.value) for r in response.resources]
            wanted = sorted(_route_names(listeners))
            if wanted != names.get(RDS):
                follow = (RDS, wanted)
        state.acked[type_url] = (response.version_info, time.monotonic())
        await request(type_url, names[type_url])
        if follow is not None:
            await request(*follow)


async def run_delta(call: Any, state: NodeState) -> None:
    """Envoy's incremental request sequence on one stream, until the stream ends."""
    held: dict[str, dict[str, Any]] = {CDS: {}, EDS: {}, LDS: {}, RDS: {}}
    """type URL → name → what the client keeps of that resource."""
    subscribed: dict[str, set[str]] = {}

    async def subscribe(type_url: str, wanted: set[str], *, first: bool = False) -> None:
        before = subscribed.get(type_url)
        subscribed[type_url] = wanted
        if before is None:
            new, gone = wanted, set()
        else:
            new, gone = wanted - before, before - wanted
            if not new and not gone:
                return
        await call.write(
            DeltaRequest(
                node=state.node if first else None,
                type_url=type_url,
                resource_names_subscribe=sorted(new),
                resource_names_unsubscribe=sorted(gone),
            )
        )

    await subscribe(CDS, set(), first=True)
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            return
        state.responses += 1
        type_url = response.type_url
        mine = held.setdefault(type_url, {})
        for name in response.removed_resources:
            mine.pop(name, None)
        for item in response.resources:
            if type_url == CDS:
                mine[item.name] = _eds_name(cluster_pb2.Cluster.FromString(item.resource.value))
            elif type_url == LDS:
                listener = listener_pb2.Listener.FromString(item.resource.value)
                mine[item.name] = _route_names([listener])
            else:
                mine[item.name] = item.version
        state.acked[type_url] = (response.system_version_info, time.monotonic())
        await call.write(DeltaRequest(type_url=type_url, response_nonce=response.nonce))
        if type_url == CDS:
            await subscribe(EDS, {name for name in held[CDS].values() if name is not None})
        elif type_url == EDS and LDS not in subscribed:
            await subscribe(LDS, set())
        elif type_url == LDS:
            await subscribe(RDS, set().union(*held[LDS].values()))


def _open_call(channel: grpc.aio.Channel, delta: bool) -> Any:
    if delta:
        return channel.stream_stream(
            SERVICE + "DeltaAggregatedResources",
            request_serializer=DeltaRequest.SerializeToString,
            response_deserializer=DeltaResponse.FromString,
        )()
    return channel.stream_stream(
        SERVICE + "StreamAggregatedResources",
        request_serializer=DiscoveryRequest.SerializeToString,
        response_deserializer=DiscoveryResponse.FromString,
    )()


async def _node(channel: grpc.aio.Channel, state: NodeState, delta: bool) -> None:
    """Run one node's ADS stream; when it fails, open a new one after a jittered exponential
    backoff (Envoy's: 0.5 s base, 30 s cap), at most ``MAX_RETRIES`` times."""
    runner = run_delta if delta else run_sotw
    failures = 0
    while True:
        call = _open_call(channel, delta)
        responses_before = state.responses
        try:
            await runner(call, state)
            state.error = "stream ended by the server"
        except asyncio.CancelledError:
            call.cancel()
            raise
        except grpc.aio.AioRpcError as exc:
            state.error = f"{exc.code().name}: {exc.details()}"
        state.failures += 1
        failures = 1 if state.responses > responses_before else failures + 1
        if state.failures > MAX_RETRIES:
            return
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (failures - 1))
        await asyncio.sleep(random.uniform(0, ceiling))


def _channel(target: str) -> grpc.aio.Channel:
    # A local subchannel pool gives every channel its own TCP connection; the default global
    # pool would silently share one connection between channels with equal arguments.
    return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


async def _worker(cfg: WorkerConfig, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + cfg.stop_after_s
    conn.send(("ready", cfg.worker))
    message = await asyncio.wait_for(loop.run_in_executor(None, conn.recv), cfg.stop_after_s)
    assert message[0] == "go", message
    target: str = message[1]
    states = [
        NodeState(base_pb2.Node(id=node_id(i), cluster=node_group(i, cfg.groups)))
        for i in cfg.nodes
    ]
    channels: list[grpc.aio.Channel] = []
    tasks: list[asyncio.Task[None]] = []
    for position, state in enumerate(states):
        if position % cfg.streams_per_channel == 0:
            channels.append(_channel(target))
        tasks.append(asyncio.create_task(_node(channels[-1], state, cfg.delta)))
    conn.send(("started", cfg.worker, len(tasks), len(channels)))
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            message = await asyncio.wait_for(
                loop.run_in_executor(None, conn.recv), timeout=remaining
            )
            if message[0] == "report":
                conn.send(
                    (
                        "acks",
                        cfg.worker,
                        [(s.node.id, s.node.cluster, s.acked, s.failures, s.error) for s in states],
                    )
                )
            elif message[0] == "stop":
                return
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


def worker_main(cfg: WorkerConfig, conn: Connection) -> None:
    """Process entry point of one client worker."""
    raise_nofile_limit()
    with contextlib.suppress(EOFError, BrokenPipeError, TimeoutError):
        asyncio.run(_worker(cfg, conn))
