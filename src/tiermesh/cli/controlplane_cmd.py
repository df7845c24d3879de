"""``tiermesh controlplane run``: one control-plane replica in the foreground.

Prints one line ``control plane ready: ads=… node-api=… join=… admin=… audit=…`` on stdout once
every port listens, serves until SIGINT or SIGTERM, then stops cleanly (exit 0). Start-up
problems print one ``error: …`` line naming what to fix (the etcd endpoint, the address in
use, the passphrase file) and exit 1.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from tiermesh.cli.envoy_cmd import parse_hostport
from tiermesh.controlplane.identity import IdentityError
from tiermesh.controlplane.runtime import (
    ControlPlane,
    ControlPlaneConfig,
    ControlPlaneError,
    HostPort,
)
from tiermesh.controlplane.store import ROOT, StoreError

__all__ = ["app", "parse_listen"]

app = typer.Typer(no_args_is_help=True, help="Run the tiermesh control plane.")


def parse_listen(value: str, option: str) -> HostPort:
    """``HOST:PORT`` with a port 0-65535 (0: any free port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise typer.BadParameter(
            f"expected HOST:PORT with a port 0-65535, got {value!r}", param_hint=option
        )
    return HostPort(host.strip("[]"), int(port_text))


def _passphrase(path: Path) -> bytes:
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--ca-passphrase-file"
        ) from exc
    if not secret:
        raise typer.BadParameter(f"{path} is empty", param_hint="--ca-passphrase-file")
    return secret


async def _serve(plane: ControlPlane) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await plane.start()
    a = plane.addresses
    typer.echo(
        f"control plane ready: ads={a['ads']} node-api={a['node_api']} "
        f"join={a['join']} admin={a['admin']} audit={a['audit']}"
    )
    await plane.serve(stop)


@app.command("run")
def run(
    etcd: Annotated[str, typer.Option("--etcd", help="etcd endpoint(s): HOST:PORT[,HOST:PORT…].")],
    trust_domain: Annotated[str, typer.Option("--trust-domain", help="SPIFFE trust domain.")],
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the server certificate and key go.")
    ],
    ca_passphrase_file: Annotated[
        Path,
        typer.Option("--ca-passphrase-file", help="File holding the shared CA's passphrase."),
    ],
    listen: Annotated[str, typer.Option("--listen", help="ADS (mTLS) HOST:PORT.")] = (
        "127.0.0.1:18000"
    ),
    node_api: Annotated[
        str, typer.Option("--node-api", help="Node API (mTLS: renew, registry) HOST:PORT.")
    ] = "127.0.0.1:18001",
    join: Annotated[
        str, typer.Option("--join", help="Join port (TLS, join tokens) HOST:PORT.")
    ] = "127.0.0.1:18002",
    admin: Annotated[
        str, typer.Option("--admin", help="Read-only status/metrics HTTP, loopback HOST:PORT.")
    ] = "127.0.0.1:18003",
    audit: Annotated[
        str,
        typer.Option("--audit", help="Decision-record collector (mTLS) HOST:PORT; 0 = any port."),
    ] = "127.0.0.1:0",
    root: Annotated[str, typer.Option("--root", help="tiermesh's key prefix in etcd.")] = ROOT,
    lease_ttl: Annotated[
        int, typer.Option("--lease-ttl", help="Seconds a lost node stays registered.")
    ] = 10,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
) -> None:
    """Run one control-plane replica until SIGINT/SIGTERM."""
    endpoints = tuple(
        "{}:{}".format(*parse_hostport(part.strip(), "--etcd")) for part in etcd.split(",")
    )
    ads_at = parse_listen(listen, "--listen")
    node_at = parse_listen(node_api, "--node-api")
    join_at = parse_listen(join, "--join")
    admin_at = parse_listen(admin, "--admin")
    audit_at = parse_listen(audit, "--audit")
    if lease_ttl < 2:
        raise typer.BadParameter("must be at least 2 seconds", param_hint="--lease-ttl")
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown level {log_level!r}", param_hint="--log-level")
    logging.getLogger("tiermesh").setLevel(level)
    try:
        config = ControlPlaneConfig(
            etcd=endpoints,
            trust_domain=trust_domain,
            data_dir=data_dir,
            ca_passphrase=_passphrase(ca_passphrase_file),
            root=root,
            lease_ttl_s=lease_ttl,
            ads=ads_at,
            node_api=node_at,
            join=join_at,
            admin=admin_at,
            audit=audit_at,
        )
        asyncio.run(_serve(ControlPlane(config)))
    except (ControlPlaneError, IdentityError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo("control plane stopped", err=True)
