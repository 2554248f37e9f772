"""Run a suite: a fixed-seed grid of generations across LoRAs, scales, prompts, seeds and
providers, stored in a run folder (default runs/<suite name>). Re-running the same command
resumes; finished generations are never sent again (--fresh asks the providers anew)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def run(
    suite: Path = typer.Argument(..., help="The suite YAML file.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/<suite name>)."),
    providers: Optional[str] = typer.Option(None, "--providers", help="Only these providers (comma-separated)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print generations, stored, cost and time; send nothing."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", min=0.0, help="Stop submitting before spending more USD."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Requests in flight per provider."),
    fresh: bool = typer.Option(False, "--fresh", help="Ask the providers again instead of reusing stored generations."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ray: bool = typer.Option(
        False, "--ray", help="Run local (diffusers) generations on Ray workers, one per GPU or CPU slot: on the "
        "cluster RAY_ADDRESS names, else the Ray instance running on this machine, else a local one started for "
        "the run. Needs pip install 'lorascope[ray]'.",
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", metavar="ADDRESS",
        help="Like --ray, on the Ray cluster at ADDRESS (auto, host:6379, ray://host:10001).",
    ),
) -> None:
    from rich.console import Console

    from lorascope.harness.runner import run_suite
    from lorascope.harness.store import StoreError
    from lorascope.harness.suite import SuiteError, load_suite

    out_console = Console(width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True)
    only = [p.strip() for p in providers.split(",") if p.strip()] if providers else None
    try:
        loaded = load_suite(suite)
        run_dir = out if out is not None else Path("runs") / loaded.name
        summary = run_suite(loaded, run_dir, providers=only, fresh=fresh, max_cost=max_cost,
                            concurrency=concurrency, dry_run=dry_run, progress=not no_progress,
                            ray=ray_address or ("local" if ray else None))
    except SuiteError as exc:
        err.print(f"[bold red]{len(exc.problems)} problem(s); nothing was sent:[/]", highlight=False)
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except StoreError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:  # before the runner took over Ctrl-C (planning, setup)
        err.print("interrupted before sending anything; run the same command again", highlight=False)
        raise typer.Exit(130)
    if dry_run:  # what the real run would refuse about the folder, the dry run refuses too
        from lorascope.harness.store import RunStore

        folder = RunStore.folder_problem(run_dir)
        if folder:
            summary.problems.append(folder)
    _print_summary(out_console, summary)
    if summary.problems:
        err.print(f"{len(summary.problems)} problem(s) a real run would refuse to send:", highlight=False)
        for problem in summary.problems:
            err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    for note in summary.notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if summary.fatal:
        err.print(f"error: {summary.fatal}", markup=False, highlight=False, soft_wrap=True)
    if summary.interrupted:
        err.print("interrupted: in-flight work recorded; run the same command again to resume", highlight=False,
                  soft_wrap=True)
    raise typer.Exit(summary.exit_code)


def _print_summary(console, summary) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    if summary.dry_run:
        console.print(f"dry run: {summary.suite} -> {summary.run_dir} (nothing sent)", highlight=False, soft_wrap=True)
        table = Table()
        for col in ("provider", "cells", "gens", "stored", "cached", "resume", "send", "est. USD", "est. time"):
            table.add_column(col, justify="right" if col != "provider" else "left")
        for name, p in summary.providers.items():
            table.add_row(name, str(p.total), str(p.generations), str(p.stored), str(p.in_cache), str(p.to_resume),
                          str(p.to_send), f"{p.estimated_cost:.3f}" + (f" + {p.unpriced} unpriced" if p.unpriced else ""), _duration(p.estimated_seconds))
        console.print(table)
        return
    console.print(f"{summary.suite} -> {summary.run_dir}", highlight=False, soft_wrap=True)
    table = Table()
    for col in ("provider", "cells", "stored", "reused", "sent", "resumed", "resent", "ok", "failed", "not sent", "cost USD"):
        table.add_column(col, justify="right" if col != "provider" else "left")
    for name, p in summary.providers.items():
        table.add_row(name, str(p.total), str(p.stored), str(p.reused), str(p.sent), str(p.resumed),
                      str(p.resent_after_crash), str(p.succeeded), str(p.failed), str(p.not_sent),
                      f"{p.cost:.4f}" + (f" + {p.cost_unknown} unknown" if p.cost_unknown else ""))
    console.print(table)
    if summary.workers:
        _print_workers(console, summary)
    resent = sum(p.resent_after_crash for p in summary.providers.values())
    if resent:
        unconfirmed = sum(p.unconfirmed_submits for p in summary.providers.values())
        console.print(
            f"{resent} request(s) were in flight when an earlier run stopped and were sent again"
            + (f" ({unconfirmed} to async providers whose task id never came back: they may have been billed twice)"
               if unconfirmed else ""),
            highlight=False, soft_wrap=True,
        )
    console.print(f"{summary.wall_s:.1f} s", highlight=False)


def _print_workers(console, summary) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(title="Ray workers")
    for col in ("worker", "where", "cells", "batches", "LoRA loads", "busy s", "cells/s busy", "lost"):
        table.add_column(col, justify="left" if col in ("worker", "where", "lost") else "right")
    for name, w in summary.workers.items():
        rate = f"{w.cells / w.busy_s:.2f}" if w.busy_s else "-"
        table.add_row(name, w.where, str(w.cells), str(w.batches), str(w.lora_loads), f"{w.busy_s:.1f}", rate,
                      w.lost or "")
    console.print(table)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
