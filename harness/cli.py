"""`lorascope` commands of the harness stage (registered by lorascope.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
