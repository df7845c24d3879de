"""The ``tiermesh`` command."""

from __future__ import annotations

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True, help="tiermesh: routing policy as code for hybrid LLM meshes."
)


def main() -> None:
    app()
