"""``tiermesh envoy …``: Envoy-side helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tiermesh.xds import BootstrapSpec, render_bootstrap, validate_bootstrap

__all__ = ["app", "parse_etcd", "parse_hostport"]

app = typer.Typer(no_args_is_help=True, help="Envoy bootstrap and helpers.")


def parse_hostport(value: str, option: str) -> tuple[str, int]:
    """Split ``HOST:PORT``; a clear ``typer.BadParameter`` names the option otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise typer.BadParameter(
            f"expected HOST:PORT with a port 1-65535, got {value!r}", param_hint=option
        )
    return host.strip("[]"), int(port_text)


def parse_etcd(value: str, option: str = "--etcd") -> str:
    """``HOST:PORT[,HOST:PORT…]`` (members of one etcd cluster) → the normalised comma list
    `EtcdStore` takes; a clear ``typer.BadParameter`` names the option otherwise."""
    return ",".join(
        "{}:{}".format(*parse_hostport(part.strip(), option)) for part in value.split(",")
    )


def _metadata(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--metadata")
        out[key] = value
    return out


@app.command("bootstrap")
def bootstrap(
    node_id: Annotated[str, typer.Option("--node-id", help="Envoy's node id.")],
    xds: Annotated[str, typer.Option("--xds", help="ADS server as HOST:PORT.")],
    admin: Annotated[int, typer.Option("--admin", help="Admin port on 127.0.0.1 (0 = any).")] = 0,
    mode: Annotated[str, typer.Option("--mode", help="sotw or delta.")] = "sotw",
    cluster: Annotated[str, typer.Option("--cluster", help="Envoy's node cluster.")] = "tiermesh",
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="Node metadata KEY=VALUE (repeat).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
) -> None:
    """Render an Envoy bootstrap that fetches everything from a tiermesh ADS server."""
    if mode not in ("sotw", "delta"):
        raise typer.BadParameter(f"expected sotw or delta, got {mode!r}", param_hint="--mode")
    if not node_id.strip():
        raise typer.BadParameter("must not be empty", param_hint="--node-id")
    if not 0 <= admin < 65536:
        raise typer.BadParameter(f"port out of range: {admin}", param_hint="--admin")
    host, port = parse_hostport(xds, "--xds")
    document = render_bootstrap(
        BootstrapSpec(
            node_id=node_id,
            cluster=cluster,
            xds_host=host,
            xds_port=port,
            admin_port=admin,
            mode=mode,  # type: ignore[arg-type]
            metadata=_metadata(metadata or []),
        )
    )
    validate_bootstrap(document)
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
