"""``tiermesh token …``: one-time join tokens for new nodes.

``tiermesh token create`` writes the token's hash to etcd and prints the token itself on
stdout, alone on one line, so ``TOKEN=$(tiermesh token create …)`` captures it; the node id
and expiry go to stderr. The token is shown once and cannot be recovered from etcd.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Annotated

import typer

from tiermesh.cli.envoy_cmd import parse_etcd
from tiermesh.controlplane.identity import InvalidNodeIdError, validate_node_id
from tiermesh.controlplane.identity.tokens import MAX_TOKEN_TTL, JoinTokens
from tiermesh.controlplane.store import ROOT, EtcdStore, StoreError

__all__ = ["app", "parse_ttl"]

app = typer.Typer(no_args_is_help=True, help="One-time join tokens for new nodes.")

_TTL_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> dt.timedelta:
    """``30s``, ``10m``, ``1h``, ``7d`` or a sum such as ``1h30m``, within (0, 7 days].

    Raises:
        ValueError: with a message that says what is accepted.
    """
    value = text.strip().lower()
    if not value or _TTL_PART.sub("", value):
        raise ValueError(f"expected a duration such as 30m, 1h or 3600s, got {text!r}")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _TTL_PART.findall(value))
    ttl = dt.timedelta(seconds=seconds)
    if ttl <= dt.timedelta(0) or ttl > MAX_TOKEN_TTL:
        raise ValueError(f"must be more than 0s and at most {MAX_TOKEN_TTL.days}d, got {text!r}")
    return ttl


async def _create(endpoint: str, root: str, node_id: str, ttl: dt.timedelta) -> str:
    async with EtcdStore(endpoint, root=root, timeout_s=5.0) as store:
        return await JoinTokens(store).create(node_id, ttl)


@app.command("create")
def create(
    node_id: Annotated[str, typer.Option("--node-id", help="The node the token may join as.")],
    etcd: Annotated[str, typer.Option("--etcd", help="etcd endpoint(s): HOST:PORT[,HOST:PORT…].")],
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 30m, 1h, 3600s … (max 7d).")] = "1h",
    root: Annotated[str, typer.Option("--root", help="tiermesh's key prefix in etcd.")] = ROOT,
) -> None:
    """Create a one-time join token for NODE_ID and print it (only the token, on stdout)."""
    try:
        validate_node_id(node_id)
    except InvalidNodeIdError as exc:
        raise typer.BadParameter(exc.reason, param_hint="--node-id") from exc
    try:
        lifetime = parse_ttl(ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from exc
    endpoint = parse_etcd(etcd)
    try:
        token = asyncio.run(_create(endpoint, root, node_id, lifetime))
    except StoreError as exc:
        typer.echo(f"error: cannot create a join token in etcd at {endpoint}: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    expires = (dt.datetime.now(dt.UTC) + lifetime).replace(microsecond=0).isoformat()
    typer.echo(token)
    typer.echo(f"join token for node {node_id!r}, valid until about {expires}", err=True)
