"""``tiermesh agent run --config node.yaml``: one node's agent in the foreground.

Prints ``agent ready: node=… spiffe_id=… app=http://127.0.0.1:<port> …`` on stdout once the
node is registered, serves until SIGINT or SIGTERM, then drains (goodbye, Envoy drained,
model server stopped) and exits 0. A start-up problem (a broken node.yaml, a model that
won't load, a port in use, Envoy failing, the control plane unreachable) prints one
``error: …`` block naming the cause and exits 1, with everything it started stopped.

``--node-id`` and ``--join-token-file`` replace ``node.id`` and
``identity.join_token_file`` of the file (see :func:`tiermesh.agents.config.load_config`):
deploy/kubernetes runs one ``node.yaml`` on every edge box of a DaemonSet and passes each
pod its Kubernetes node's name and join token.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from tiermesh.agents.config import ConfigError, load_config
from tiermesh.agents.identity import AgentIdentityError
from tiermesh.agents.models import ModelServerError
from tiermesh.agents.runtime import AgentError, NodeAgent
from tiermesh.cli.server_logs import configure_server_logging

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Run a tiermesh node agent.")


async def _serve(agent: NodeAgent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(agent.start())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # a signal during start: stop what started, exit cleanly
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await agent.stop()
        return
    stopper.cancel()
    starting.result()
    config = agent.config
    spiffe_id = agent.store.require().spiffe_id
    model = f" model={agent.model.base_url}" if agent.model is not None else ""
    typer.echo(
        f"agent ready: node={config.node.id} spiffe_id={spiffe_id} "
        f"app=http://127.0.0.1:{config.envoy.app_port} "
        f"admin={config.envoy_admin_socket or config.envoy.admin_address}"
        f"{model}"
    )
    await stop.wait()
    typer.echo("draining…", err=True)
    await agent.drain()


@app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", help="The node's node.yaml.")],
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
    node_id: Annotated[
        str | None,
        typer.Option("--node-id", help="Replaces node.id (one node.yaml for many nodes)."),
    ] = None,
    join_token_file: Annotated[
        Path | None,
        typer.Option("--join-token-file", help="Replaces identity.join_token_file."),
    ] = None,
) -> None:
    """Run the node agent until SIGINT/SIGTERM."""
    configure_server_logging(log_level)
    try:
        settings = load_config(config, node_id=node_id, join_token_file=join_token_file)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    try:
        asyncio.run(_serve(NodeAgent(settings)))
    except (AgentError, ModelServerError, AgentIdentityError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo("agent stopped", err=True)
