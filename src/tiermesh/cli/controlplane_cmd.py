"""``tiermesh controlplane run``: one control-plane replica in the foreground.

Prints one line ``control plane ready: ads=… node-api=… join=… admin=… audit=…`` (and
`` dashboard=http://…/`` with ``--dashboard``) on stdout once every port listens, serves
until SIGINT or SIGTERM, then stops cleanly (exit 0). Start-up problems print one
``error: …`` line naming what to fix (the etcd endpoint, the address in use, the
passphrase file, the credentials file, an unsafe dashboard address) and exit 1.

``--credentials-file FILE`` holds the cloud API keys: a YAML (or JSON) mapping of secret
name (what a catalog backend's ``credential.secret`` names) to key, e.g.
``frontier-key: sk-…``. The file must be a regular file readable by its owner only (no
group or world permission bits; ``chmod 600``), else the control plane refuses to start.
Keys are served to nodes as SDS generic secrets; they are never printed, logged or
reported by the admin server. Without the option no keys are known, and a plan with a
credentialed backend is refused (the last good snapshot stays).

``--dashboard HOST:PORT`` serves the read-only web dashboard
(:mod:`tiermesh.controlplane.dashboard`). On a loopback address it asks for nothing; on any
other it needs ``--dashboard-token-file FILE`` (mode 0600, one token of at least 16
characters, sent as ``Authorization: Bearer`` or as the basic-auth password), and without
one the control plane refuses to start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from pathlib import Path
from typing import Annotated

import typer
import yaml

from tiermesh.cli.envoy_cmd import parse_etcd
from tiermesh.cli.server_logs import configure_server_logging
from tiermesh.controlplane.dashboard import DashboardError, check_bind, read_token_file
from tiermesh.controlplane.identity import IdentityError
from tiermesh.controlplane.runtime import (
    ControlPlane,
    ControlPlaneConfig,
    ControlPlaneError,
    HostPort,
)
from tiermesh.controlplane.store import ROOT, StoreError

__all__ = ["app", "parse_listen", "read_credentials", "read_passphrase"]

app = typer.Typer(no_args_is_help=True, help="Run the tiermesh control plane.")


def parse_listen(value: str, option: str) -> HostPort:
    """``HOST:PORT`` with a port 0-65535 (0: any free port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise typer.BadParameter(
            f"expected HOST:PORT with a port 0-65535, got {value!r}", param_hint=option
        )
    return HostPort(host.strip("[]"), int(port_text))


def read_passphrase(path: Path) -> bytes:
    """The CA passphrase in ``path`` (trailing newline dropped); ``typer.BadParameter``
    naming ``--ca-passphrase-file`` when unreadable or empty."""
    try:
        secret = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--ca-passphrase-file"
        ) from exc
    if not secret:
        raise typer.BadParameter(f"{path} is empty", param_hint="--ca-passphrase-file")
    return secret


def read_credentials(path: Path) -> dict[str, str]:
    """The secret name → API key mapping in ``path`` (YAML or JSON).

    Raises ``typer.BadParameter`` (naming ``--credentials-file``, never a key) when the
    file is missing, not a regular file, readable or writable by group or others, not a
    mapping, or has an empty name or a key that is not a non-empty string.
    """
    hint = "--credentials-file"
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise typer.BadParameter(f"{path} is not a regular file", param_hint=hint)
            if mode & 0o077:
                raise typer.BadParameter(
                    f"{path} is accessible by group or others (mode "
                    f"{stat.S_IMODE(mode):04o}); it holds API keys: chmod 600 {path}",
                    param_hint=hint,
                )
            text = handle.read()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=hint) from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        # The parser's message quotes the offending line, which may hold a key.
        raise typer.BadParameter(f"{path} is not YAML or JSON", param_hint=hint) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise typer.BadParameter(f"{path} must map secret names to keys", param_hint=hint)
    credentials: dict[str, str] = {}
    for name, key in document.items():
        if not isinstance(name, str) or not name:
            raise typer.BadParameter(f"{path}: a secret name is empty", param_hint=hint)
        if not isinstance(key, str) or not key:
            raise typer.BadParameter(
                f"{path}: the key of {name!r} must be a non-empty string", param_hint=hint
            )
        credentials[name] = key
    return credentials


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
        + (f" dashboard={a['dashboard']}" if "dashboard" in a else "")
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
    metrics: Annotated[
        str | None,
        typer.Option("--metrics", help="Prometheus /metrics alone (no status), HOST:PORT."),
    ] = None,
    audit: Annotated[
        str,
        typer.Option("--audit", help="Decision-record collector (mTLS) HOST:PORT; 0 = any port."),
    ] = "127.0.0.1:0",
    root: Annotated[str, typer.Option("--root", help="tiermesh's key prefix in etcd.")] = ROOT,
    lease_ttl: Annotated[
        int, typer.Option("--lease-ttl", help="Seconds a lost node stays registered.")
    ] = 10,
    replica: Annotated[
        str | None,
        typer.Option(
            "--replica",
            envvar="TIERMESH_REPLICA",
            help="This replica's name among several over one etcd (names its plan chain).",
        ),
    ] = None,
    leader_ttl: Annotated[
        int, typer.Option("--leader-ttl", help="Seconds of the leader lease (at least 2).")
    ] = 5,
    server_cert_ttl: Annotated[
        float,
        typer.Option(
            "--server-cert-ttl",
            help="Seconds the control plane's own certificate is valid (renewed at 2/3).",
        ),
    ] = 86_400.0,
    svid_ttl: Annotated[
        float | None,
        typer.Option("--svid-ttl", help="Seconds node SVIDs are valid (default: one hour)."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
    credentials_file: Annotated[
        Path | None,
        typer.Option(
            "--credentials-file",
            help="YAML/JSON map of secret name to cloud API key; mode 0600 (owner only).",
        ),
    ] = None,
    dashboard: Annotated[
        str | None,
        typer.Option(
            "--dashboard",
            help="Serve the read-only web dashboard on HOST:PORT (loopback unless a token"
            " file is given).",
        ),
    ] = None,
    dashboard_token_file: Annotated[
        Path | None,
        typer.Option(
            "--dashboard-token-file",
            help="File (mode 0600) holding the token the dashboard asks for: bearer token,"
            " or basic-auth password.",
        ),
    ] = None,
) -> None:
    """Run one control-plane replica until SIGINT/SIGTERM."""
    endpoints = tuple(parse_etcd(etcd).split(","))
    ads_at = parse_listen(listen, "--listen")
    node_at = parse_listen(node_api, "--node-api")
    join_at = parse_listen(join, "--join")
    admin_at = parse_listen(admin, "--admin")
    audit_at = parse_listen(audit, "--audit")
    metrics_at = None if metrics is None else parse_listen(metrics, "--metrics")
    if lease_ttl < 2:
        raise typer.BadParameter("must be at least 2 seconds", param_hint="--lease-ttl")
    if leader_ttl < 2:
        raise typer.BadParameter("must be at least 2 seconds", param_hint="--leader-ttl")
    configure_server_logging(log_level)
    credentials = {} if credentials_file is None else read_credentials(credentials_file)
    dashboard_at = None if dashboard is None else parse_listen(dashboard, "--dashboard")
    token = None
    try:
        if dashboard_token_file is not None:
            token = read_token_file(dashboard_token_file)
        if dashboard_at is not None:
            check_bind(dashboard_at.host, dashboard_at.port, token)
    except DashboardError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    try:
        config = ControlPlaneConfig(
            etcd=endpoints,
            trust_domain=trust_domain,
            data_dir=data_dir,
            ca_passphrase=read_passphrase(ca_passphrase_file),
            root=root,
            lease_ttl_s=lease_ttl,
            replica=replica,
            leader_ttl_s=leader_ttl,
            server_cert_ttl_s=server_cert_ttl,
            svid_ttl_s=svid_ttl,
            ads=ads_at,
            node_api=node_at,
            join=join_at,
            admin=admin_at,
            audit=audit_at,
            metrics=metrics_at,
            credentials=credentials,
            dashboard=dashboard_at,
            dashboard_token=token,
            freeze_heap=True,  # the only control plane of this process
        )
    except ValueError as exc:  # a lifetime out of range
        raise typer.BadParameter(str(exc)) from exc
    try:
        asyncio.run(_serve(ControlPlane(config)))
    except (ControlPlaneError, IdentityError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo("control plane stopped", err=True)
