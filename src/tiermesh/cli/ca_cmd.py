"""``tiermesh ca …``: the shared CA in etcd.

``tiermesh ca rotate`` rolls the CA over: a new root and intermediate sign every SVID from
then on, and the old root stays in the trust bundle so that SVIDs it issued keep working
until they expire. Every running control-plane replica follows within moments (it watches
the CA in etcd): its ports trust the new bundle from their next handshake on and renew
their own certificate, without a restart. Prints the new generation (its root's SHA-256
fingerprint) on stdout; what happened goes to stderr. Refusals (etcd unreachable, wrong
passphrase, another trust domain) print one ``error: …`` line and exit 1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tiermesh.cli.controlplane_cmd import read_passphrase
from tiermesh.cli.envoy_cmd import parse_etcd
from tiermesh.controlplane.identity import (
    CaConfig,
    EtcdCaStore,
    IdentityError,
    LocalCertificateAuthority,
)
from tiermesh.controlplane.store import ROOT, EtcdStore, StoreError

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="The shared CA in etcd.")


async def _rotate(
    endpoint: str, root: str, config: CaConfig, passphrase: bytes
) -> tuple[LocalCertificateAuthority, int]:
    async with EtcdStore(endpoint, root=root, timeout_s=5.0) as store:
        ca_store = EtcdCaStore(store, passphrase)
        ca = await ca_store.rotate(config)
        return ca, ca_store.seq or 0


@app.command("rotate")
def rotate(
    etcd: Annotated[str, typer.Option("--etcd", help="etcd endpoint(s): HOST:PORT[,HOST:PORT…].")],
    trust_domain: Annotated[str, typer.Option("--trust-domain", help="SPIFFE trust domain.")],
    ca_passphrase_file: Annotated[
        Path,
        typer.Option("--ca-passphrase-file", help="File holding the shared CA's passphrase."),
    ],
    root: Annotated[str, typer.Option("--root", help="tiermesh's key prefix in etcd.")] = ROOT,
) -> None:
    """Roll the shared CA over; running replicas follow without a restart."""
    passphrase = read_passphrase(ca_passphrase_file)
    endpoint = parse_etcd(etcd)
    try:
        ca, seq = asyncio.run(_rotate(endpoint, root, CaConfig(trust_domain), passphrase))
    except (IdentityError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(ca.active.id)
    typer.echo(
        f"the CA of {trust_domain} rolled over (state {seq}): the new generation signs,"
        f" the bundle holds {len(ca.bundle().roots)} roots",
        err=True,
    )
