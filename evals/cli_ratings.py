"""`lorascope ratings RUN` (strengths, preferred scale, metric agreement), `lorascope ratings
export RUN -o votes.jsonl` and `lorascope ratings import RUN votes.jsonl`.

`ratings RUN` is `ratings show RUN`: the group treats a first word that is not a subcommand
as the run. Exit codes: 0 ok, 1 a votes file was refused, 2 usage (not a run, no votes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup


class _DefaultShow(TyperGroup):
    """`lorascope ratings RUN ...` means `lorascope ratings show RUN ...`."""

    def parse_args(self, ctx, args):  # type: ignore[override]
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_DefaultShow, no_args_is_help=True, add_completion=False,
                  help="Human pairwise votes (from `lorascope review`): strengths, preferred scale, export/import.")


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _check_run(run: Path) -> None:
    if not (run / "run.db").is_file():
        _fail(f"{run} is not a lorascope run folder (no run.db); create one with `lorascope run SUITE`")


def _f(value: float, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


@app.command("show")
def show(
    run: Path = typer.Argument(..., help="The run folder (holds run.db).", file_okay=False),
    rater: Optional[str] = typer.Option(None, "--rater", help="Only this rater's votes (default: everyone's)."),
    prior: float = typer.Option(1.0, "--prior", min=0.0, help="Virtual ties between neighbouring scales (keeps a clean sweep finite)."),
    resamples: int = typer.Option(1000, "--resamples", min=0, help="Bootstrap resamples for the 95% intervals."),
    clip: Optional[str] = typer.Option(None, "--clip", help="Which scoring to check agreement against (default: the latest)."),
) -> None:
    """Bradley-Terry strengths per (LoRA, provider, scale) with 95% intervals and vote counts,
    the human-preferred scale, and how often each automatic metric agrees with the votes.
    Writes RUN/ratings.json."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lorascope.evals.ratings import fit_all, scale_label
    from lorascope.harness.ratings import Ratings

    _check_run(run)
    with Ratings.open(run) as ratings:
        votes = ratings.votes(rater)
    if not votes:
        who = f" by {rater}" if rater else ""
        _fail(f"{run} has no votes{who} yet; open the review page with `lorascope review {run}`")
    console = Console()
    from lorascope.evals.ratings import build_slots, is_conditioned
    from lorascope.harness.store import RunStore

    with RunStore.open(run) as store:  # the slots tell each vote's strength in a strength sweep
        slots = build_slots(store.results_frame())
    fits = fit_all(votes, slots if is_conditioned(slots) else (), prior=prior, resamples=resamples)
    for fit in fits:
        at = "" if fit.strength is None else f" · strength {fit.strength:g}"
        table = Table(title=f"{escape(fit.lora)} · {escape(fit.provider)}{at}: {fit.decided} decided, {fit.ties} tie(s), "
                            f"{fit.skips} skip(s); raters {escape(', '.join(fit.raters))}")
        for col in ("scale", f"strength vs {scale_label(fit.reference)} (95% CI)", "wins", "losses", "ties", "P(best)"):
            table.add_column(col, justify="left" if col == "scale" else "right")
        best = fit.preferred
        for s in fit.strengths:
            mark = " ★" if best is not None and s.scale == best.scale else ""
            table.add_row(escape(scale_label(s.scale)) + mark,
                          f"{_f(s.strength, '+.2f')} [{_f(s.low, '+.2f')}, {_f(s.high, '+.2f')}]",
                          str(s.wins), str(s.losses), str(s.ties), _f(s.p_best, ".0%"))
        console.print(table)
        if best is None:
            console.print("human-preferred: — (no decided votes)")
        elif fit.preferred_scale is None:
            console.print(f"human-preferred: [bold]no LoRA[/bold] (the baseline beat every scale; P(best) {_f(best.p_best, '.0%')})")
        else:
            console.print(f"human-preferred scale: [bold]{fit.preferred_scale:g}[/bold] (P(best) {_f(best.p_best, '.0%')})")
    agreement = _agreement(run, votes, clip)
    if agreement:
        table = Table(title="which metric matches your eye: share of decided votes where the metric prefers the chosen image")
        for col in ("metric", "agrees", "95% CI", "votes it separates", "can't separate"):
            table.add_column(col)
        for a in sorted(agreement, key=lambda a: -a.share if not math.isnan(a.share) else 1):
            table.add_row(escape(a.label), _f(a.share, ".0%"), f"[{_f(a.low, '.0%')}, {_f(a.high, '.0%')}]",
                          str(a.n), str(a.undecided))
        console.print(table)
    else:
        console.print("metric agreement: the run has no scores yet (`lorascope score RUN`)")
    (run / "ratings.json").write_text(json.dumps({
        "rater": rater, "prior": prior, "resamples": resamples,
        "fits": [f.as_dict() for f in fits],
        "agreement": [vars(a) for a in agreement],
    }, indent=2, default=lambda v: None), encoding="utf-8")


def _agreement(run: Path, votes, clip: Optional[str]):
    from lorascope.evals.ratings import metric_agreement
    from lorascope.evals.results import run_model, scored_frame
    from lorascope.evals.scorer_store import scorer_columns

    model = run_model(run, clip)

    frame, _ = scorer_columns(scored_frame(run, model), run)  # plugin scorers (aesthetic, ...) too
    return metric_agreement(votes, frame)


@app.command("export")
def export(
    run: Path = typer.Argument(..., help="The run folder.", file_okay=False),
    output: Path = typer.Option(..., "--output", "-o", help="The JSONL file to write (one vote per line)."),
) -> None:
    """Write every vote of RUN to a JSONL file (merge it elsewhere with `ratings import`)."""
    from lorascope.harness.ratings import Ratings

    _check_run(run)
    with Ratings.open(run) as ratings:
        n = ratings.export_jsonl(output)
    typer.echo(f"exported {n} vote(s) to {output}")


@app.command("import")
def import_(
    run: Path = typer.Argument(..., help="The run folder.", file_okay=False),
    votes_file: Path = typer.Argument(..., help="A JSONL file from `ratings export`.", dir_okay=False),
) -> None:
    """Add the votes of a JSONL export to RUN; votes already there (same id) are skipped."""
    from lorascope.harness.ratings import Ratings, RatingsError
    from lorascope.harness.store import RunStore

    _check_run(run)
    if not votes_file.is_file():
        _fail(f"{votes_file}: no such file")
    with RunStore.open(run) as store:
        frame = store.results_frame()
    known = [(c, int(i), s) for c, i, s in zip(frame["cell_id"], frame["image_index"], frame["image_sha256"]) if s]
    with Ratings.open(run) as ratings:
        try:
            added, present = ratings.import_jsonl(votes_file, known)
        except RatingsError as exc:
            _fail(str(exc), code=1)
    typer.echo(f"imported {added} vote(s) into {run}; {present} were already there")
