"""Not built yet."""

from __future__ import annotations

import typer


def generate() -> None:
    typer.echo("not built yet", err=True)
    raise typer.Exit(2)
