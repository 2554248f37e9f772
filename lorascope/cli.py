"""The `lorascope` command: composes each stage's commands into one typer app.

Each stage module registers its own commands and keeps torch/diffusers/open_clip imports
inside the command bodies, so `lorascope --help` and `lorascope registry ...` start fast.
Exit codes: 0 ok, 1 a check failed, 2 usage error.
"""

from __future__ import annotations

import logging
import os

import typer

from lorascope.evals import cli as evals_cli
from lorascope.harness import cli as harness_cli
from lorascope.registry import cli as registry_cli
from lorascope.reports import cli as reports_cli

app = typer.Typer(
    name="lorascope",
    help="Which LoRA, at which scale? Did my provider change? Fixed-seed grids for Z-Image Turbo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(registry_cli.app, name="registry", help="The LoRA catalogue (loras.yaml).")
harness_cli.register(app)
evals_cli.register(app)
reports_cli.register(app)


def configure_logging() -> logging.Handler:
    """Log records (ours and the libraries') go to stderr through the key redactor, so an API
    key that turns up in a message is masked. `LORASCOPE_LOG_LEVEL=DEBUG` shows more."""
    from lorascope.harness.secrets import RedactingFilter

    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(os.environ.get("LORASCOPE_LOG_LEVEL", "WARNING").upper())
    return handler


def main() -> None:
    from lorascope.harness.cli_errors import run_guarded

    configure_logging()
    run_guarded(app)
