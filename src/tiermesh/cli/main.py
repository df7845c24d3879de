"""The ``tiermesh`` command."""

from __future__ import annotations

import logging

import typer

from tiermesh.cli import controlplane_cmd, envoy_cmd, policy_cmd
from tiermesh.cli.agent_cmd import app as agent_app
from tiermesh.cli.audit_cmd import app as audit_app
from tiermesh.cli.ca_cmd import app as ca_app
from tiermesh.cli.key_cmd import app as key_app
from tiermesh.cli.model_cmd import app as model_app
from tiermesh.cli.status_cmd import status
from tiermesh.cli.token_cmd import app as token_app
from tiermesh.cli.top_cmd import top
from tiermesh.cli.up_cmd import up

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    help="tiermesh: routing policy as code for hybrid local/cloud LLM meshes.",
    pretty_exceptions_enable=False,
)
app.add_typer(envoy_cmd.app, name="envoy")
app.add_typer(token_app, name="token")
app.add_typer(key_app, name="key")
app.add_typer(ca_app, name="ca")
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(model_app, name="model")
app.command("up")(up)
app.add_typer(controlplane_cmd.app, name="controlplane")
app.add_typer(agent_app, name="agent")
app.command("status")(status)
app.command("top")(top)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
