"""`lorascope review RUN`: the local pairwise-vote page (reports/review_server.py)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Optional

import typer


def _default_rater() -> str:
    try:
        return getpass.getuser() or "me"
    except Exception:  # no user name in this environment
        return "me"


def review(
    run: Path = typer.Argument(..., help="The run folder (holds run.db).", file_okay=False),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback gets an access token in the URL."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free one)."),
    rater: Optional[str] = typer.Option(None, "--rater", help="Your name on the votes (default: your user name)."),
) -> None:
    """Vote by eye on pairs of a run's images in a local web page (votes go into run.db).

    Each pair is one LoRA, prompt and seed at two scales (the no-LoRA baseline among them);
    in an img2img/inpaint run also one denoising strength and input picture, shown beside the
    pair. `lorascope ratings RUN` then turns the votes into strengths and a preferred scale."""
    from lorascope.reports.review_server import NothingToReview, serve

    if not (run / "run.db").is_file():
        typer.echo(f"error: {run} is not a lorascope run folder (no run.db)", err=True)
        raise typer.Exit(2)
    try:
        serve(run, host=host, port=port, rater=rater or _default_rater(),
              announce=lambda line: typer.echo(line, err=False))
    except NothingToReview as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
