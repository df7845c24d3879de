"""``tiermesh key …``: tenant API keys (who a request is, whatever its headers say).

``tiermesh key create --tenant T`` writes the key's digest to etcd and prints the key on
stdout, alone on one line, so ``KEY=$(tiermesh key create …)`` captures it; its id goes to
stderr. The key is shown once and cannot be recovered from etcd. ``list`` shows ids,
tenants and dates, never keys; ``revoke`` takes effect on every node within seconds.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from tiermesh.cli.envoy_cmd import parse_etcd
from tiermesh.controlplane.identity.api_keys import ApiKeyError, TenantKeys
from tiermesh.controlplane.store import ROOT, ApiKeyRecord, EtcdStore, StoreError, UnknownApiKey

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Tenant API keys.")

_Etcd = Annotated[str, typer.Option("--etcd", help="etcd endpoint(s): HOST:PORT[,HOST:PORT…].")]
_Root = Annotated[str, typer.Option("--root", help="tiermesh's key prefix in etcd.")]


def _endpoint(etcd: str) -> str:
    return parse_etcd(etcd)


async def _create(endpoint: str, root: str, tenant: str) -> tuple[str, ApiKeyRecord]:
    async with EtcdStore(endpoint, root=root, timeout_s=5.0) as store:
        return await TenantKeys(store).create(tenant)


async def _list(endpoint: str, root: str, tenant: str | None) -> tuple[ApiKeyRecord, ...]:
    async with EtcdStore(endpoint, root=root, timeout_s=5.0) as store:
        return await TenantKeys(store).list(tenant)


async def _revoke(endpoint: str, root: str, key_id: str) -> ApiKeyRecord:
    async with EtcdStore(endpoint, root=root, timeout_s=5.0) as store:
        return await TenantKeys(store).revoke(key_id)


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="A tenant of the served catalog.")],
    etcd: _Etcd,
    root: _Root = ROOT,
) -> None:
    """Create an API key for TENANT and print it (only the key, on stdout)."""
    endpoint = _endpoint(etcd)
    try:
        key, record = asyncio.run(_create(endpoint, root, tenant))
    except ApiKeyError as exc:
        typer.echo(f"error: {exc}; nothing was stored", err=True)
        raise typer.Exit(code=1) from exc
    except StoreError as exc:
        typer.echo(f"error: cannot create an API key in etcd at {endpoint}: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(key)
    typer.echo(f"API key {record.key_id} for tenant {tenant!r} (shown once)", err=True)


@app.command("list")
def list_keys(
    etcd: _Etcd,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's.")] = None,
    root: _Root = ROOT,
) -> None:
    """List API keys: id, tenant, created, revoked (never the keys)."""
    endpoint = _endpoint(etcd)
    try:
        records = asyncio.run(_list(endpoint, root, tenant))
    except StoreError as exc:
        typer.echo(f"error: cannot read API keys from etcd at {endpoint}: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"{'ID':<16}  {'TENANT':<20}  {'CREATED':<25}  REVOKED")
    for r in records:
        typer.echo(f"{r.key_id:<16}  {r.tenant:<20}  {r.created_at:<25}  {r.revoked_at or '-'}")


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (tiermesh key list).")],
    etcd: _Etcd,
    root: _Root = ROOT,
) -> None:
    """Revoke the API key KEY_ID: requests bearing it are refused from then on."""
    endpoint = _endpoint(etcd)
    try:
        record = asyncio.run(_revoke(endpoint, root, key_id))
    except UnknownApiKey as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    except StoreError as exc:
        typer.echo(f"error: cannot revoke an API key in etcd at {endpoint}: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"API key {record.key_id} of tenant {record.tenant!r} revoked at "
               f"{record.revoked_at}", err=True)  # fmt: skip
