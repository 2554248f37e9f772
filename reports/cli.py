"""`lorascope report` and `lorascope demo` (registered by lorascope.cli).

Command bodies import the renderer (pandas, Pillow, Jinja2) and the demo (torch,
diffusers, open_clip) only when they run, so `lorascope --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def report(
    run: Path = typer.Argument(..., help="The run folder (holds run.db)."),
    compare: Optional[Path] = typer.Option(
        None, "--compare", metavar="BASELINE",
        help="Render the comparison of RUN against this baseline run folder (from RUN/compare.json) instead.",
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Where to write the HTML (default: RUN/report.html, or RUN/compare.html)."
    ),
) -> None:
    """Write RUN/report.html: grids, plots, latency/cost, failures (one offline file)."""
    from lorascope.reports.errors import ReportError
    from lorascope.reports.service import write_compare_report, write_run_report

    try:
        if compare is not None:
            path = write_compare_report(compare, run, output, progress=True)
        else:
            path = write_run_report(run, output, progress=True)
    except ReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    typer.echo(f"report: {path}")


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's LoRAs, catalogue, suite and run."),
) -> None:
    """Run the whole product offline on random-weight models (LoRAs, catalogue, suite, run, score, report)."""
    from lorascope.reports.demo import run_demo
    from lorascope.reports.errors import ReportError

    try:
        result = run_demo(out)
    except ReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.timings.items())
    typer.echo(f"demo finished in {result.seconds:.1f} s ({stages})")
    typer.echo(f"report: {result.report}")
    if result.img2img_report is not None:
        typer.echo(f"img2img report: {result.img2img_report}")
    typer.echo(f"pick by eye: lorascope review {result.run_dir}  (opens a local voting page; "
               f"then `lorascope ratings {result.run_dir}`)")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    app.command("report", help=report.__doc__)(report)
    app.command("demo", help=demo.__doc__)(demo)
    from lorascope.reports.cli_review import review

    app.command("review", help=review.__doc__)(review)
