"""`lorascope generate` and `lorascope run` (registered by lorascope.cli).

The command bodies live in their own modules; this one only wires them, so importing it
stays cheap.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    from lorascope.harness import cli_generate, cli_run

    app.command("generate", help=cli_generate.__doc__)(cli_generate.generate)
    app.command("run", help=cli_run.__doc__)(cli_run.run)
