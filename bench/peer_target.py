"""tiermesh as a target of an external gateway benchmark: one edge node as ``tiermesh up``
runs it (control plane, etcd, agent with ext_authz, durable signed audit, usage
accounting, Envoy), in front of the harness's own backends.

The local backend is expected on 127.0.0.1:``--primary-port``, its fallback on
127.0.0.1:``--fallback-port``; neither has to listen yet: the node comes up without them
and serves once they do (Envoy's health checks and retries find them). What runs and how
the catalog differs from the demo's: :mod:`tiermesh.demo.edge_target`.

Once ready it prints, one per line, and flushes:

    TARGET_URL=http://127.0.0.1:PORT          the app listener (POST /v1/chat/completions)
    TARGET_PID=PID                            the root of its process tree (this process)
    TARGET_HEADERS=name: value;name: value    every header a request needs (API key,
                                              tenant, sensitivity, task)
    TARGET_MODEL=NAME                         the model to name in the body
    TARGET_STATE_DIR=PATH                     its temporary state (configs, logs)

then runs until SIGTERM or SIGINT, stops every process it started (by PID) and removes
its state dir; exit 0. A start failure prints ``peer target failed: <cause>`` on stderr,
leaves nothing behind either, and exits 1. Progress goes to stderr.

    .venv/bin/python bench/peer_target.py --primary-port 8101 --fallback-port 8102
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from tiermesh.demo.edge_target import TARGET_MODEL, EdgeTarget
from tiermesh.demo.mesh import MeshError
from tiermesh.procs.ports import free_port


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def announce(target: EdgeTarget) -> str:
    """The ready lines (module docstring)."""
    headers = ";".join(f"{name}: {value}" for name, value in target.headers().items())
    return (
        f"TARGET_URL={target.edge.app_url}\n"
        f"TARGET_PID={os.getpid()}\n"
        f"TARGET_HEADERS={headers}\n"
        f"TARGET_MODEL={TARGET_MODEL}\n"
        f"TARGET_STATE_DIR={target.state_dir}\n"
    )


async def run(target: EdgeTarget) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def step(what: str) -> None:
        print(f"starting {what}", file=sys.stderr, flush=True)

    starting = asyncio.create_task(target.start(step))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 0
        starting.result()
        sys.stdout.write(announce(target))
        sys.stdout.flush()
        await stopper
        return 0
    finally:
        stopper.cancel()
        await target.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--primary-port", type=_port, required=True)
    parser.add_argument("--fallback-port", type=_port, required=True)
    parser.add_argument("--port", type=_port, default=None, help="app listener (default: free)")
    args = parser.parse_args()
    try:
        target = EdgeTarget(
            primary_port=args.primary_port,
            fallback_port=args.fallback_port,
            app_port=args.port or free_port(),
        )
        return asyncio.run(run(target))
    except MeshError as exc:
        print(f"peer target failed: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
