"""``tiermesh up``: run the local mesh until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.console import Console

from tiermesh.demo.static_mesh import MeshError, StaticMesh

__all__ = ["up"]


def up(
    port: Annotated[int, typer.Option("--port", help="App-facing listener port.")] = 10000,
    xds_port: Annotated[int, typer.Option("--xds-port", help="ADS port (0 = any free).")] = 0,
    mode: Annotated[str, typer.Option("--mode", help="xDS flavour: sotw or delta.")] = "sotw",
) -> None:
    """Start the local mesh on 127.0.0.1 and keep it running until Ctrl-C."""
    if mode not in ("sotw", "delta"):
        raise typer.BadParameter(f"expected sotw or delta, got {mode!r}", param_hint="--mode")
    console = Console()
    try:
        asyncio.run(_run(StaticMesh(app_port=port, xds_port=xds_port, mode=mode), console))
    except MeshError as exc:
        console.print(f"[red]tiermesh up failed:[/red] {exc}")
        raise typer.Exit(1) from exc


async def _run(mesh: StaticMesh, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with console.status("starting the local backend…"):
            await mesh.start_backend()
        console.print("[green]✓[/green] local backend (stand-in)")
        with console.status("starting the control plane…"):
            await mesh.start_control_plane()
        console.print(f"[green]✓[/green] control plane, ADS on 127.0.0.1:{mesh.xds_port}")
        with console.status("starting Envoy and waiting for its config…"):
            await mesh.start_envoy()
        console.print("[green]✓[/green] edge Envoy ready")
        console.print(f"\ntiermesh is up. App endpoint: [bold]{mesh.app_url}[/bold]")
        console.print("Send a request through the edge Envoy:\n")
        console.print(
            f"  curl -s {mesh.app_url}/v1/chat/completions -H 'content-type: application/json' "
            '-d \'{"model":"local","messages":[{"role":"user","content":"hi"}]}\'',
            soft_wrap=True,
            highlight=False,
        )
        console.print("\nPress Ctrl-C to stop.", highlight=False)
        await stop.wait()
    finally:
        with console.status("stopping…"):
            await mesh.stop()
        console.print("stopped; nothing left running.")
