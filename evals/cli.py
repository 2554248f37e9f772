"""`lorascope score`, `lorascope recommend`, `lorascope compare` (registered by lorascope.cli).

Command bodies import pandas/torch/open_clip only when they run, so `lorascope --help`
stays fast. Exit codes: 0 ok, 1 a check failed (compare found a regression), 2 usage error
(not a run folder, unknown option value, CLIP weights unavailable, run not scored yet).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from rich.console import Console

CLIP_HELP = (
    "CLIP model as ARCH[:PRETRAINED] (open_clip names), e.g. ViT-B-32:openai (default), ViT-L-14:openai, "
    "or tiny-random (offline, meaningless numbers: tests and demos). Env: LORASCOPE_CLIP, "
    "LORASCOPE_CLIP_CHECKPOINT (local .safetensors weights)."
)


SCORER_HELP = (
    "Comma-separated scorers, one pass over the images: clip (default), aesthetic (LAION v2 head on "
    "--clip; LORASCOPE_AESTHETIC_HEAD), hpsv2 (LORASCOPE_HPSV2_CHECKPOINT), pickscore "
    "(LORASCOPE_PICKSCORE_MODEL), or a plugin's name; NAME:tiny-random = random weights (offline, "
    "meaningless numbers)."
)


def _console() -> "Console":
    from rich.console import Console

    return Console()


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    _console().print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _open_run(run: Path) -> None:
    """Exit 2 with a clear message when `run` is not a run folder."""
    if not (run / "run.db").is_file():
        _fail(f"{run} is not a lorascope run folder (no run.db); create one with `lorascope run SUITE`")


def _fmt(value: Any, spec: str = ".3f") -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(f) else format(f, spec)


def _ci(row: "pd.Series", metric: str, spec: str = ".3f") -> str:
    mean, low, high = row.get(f"{metric}_mean"), row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return _fmt(mean, spec)
    return f"{_fmt(mean, spec)} ±{_fmt((high - low) / 2, spec.lstrip('+'))}"


def score(
    run: Path = typer.Argument(..., help="Run folder (holds run.db).", file_okay=False),
    clip: Optional[str] = typer.Option(None, "--clip", help=CLIP_HELP),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per CLIP forward pass."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    scorer: Optional[str] = typer.Option(
        None, "--scorer", help=SCORER_HELP,
    ),
    refetch: bool = typer.Option(
        False, "--refetch",
        help="Fetch https input pictures again even where the run kept a copy; if the URL now serves other "
        "bytes, their images get no fidelity (the picture the provider saw is no longer known).",
    ),
) -> None:
    """Score a run's images with CLIP: CLIPScore, style shift, LoRA effect, agreement; with
    --scorer also aesthetic / human-preference scorers, and each one's gain over the
    same-seed no-LoRA image.

    Idempotent: embeddings and scores are cached by image hash and model, so re-scoring does
    no model work for images already seen. Writes the scores into run.db and re-exports
    results.parquet with the score columns."""
    from rich.markup import escape
    from rich.table import Table

    from lorascope.evals.metrics import aggregate, provider_stats
    from lorascope.evals.scorer import ScorerUnavailable
    from lorascope.evals.scoring import score_run, score_run_with

    _open_run(run)
    console = _console()
    multi = None
    try:
        if scorer is None or scorer.strip() == "clip":
            summary = score_run(run, clip, batch_size=batch_size, progress=progress, refetch=refetch)
        else:
            multi = score_run_with(run, scorer, clip, batch_size=batch_size, progress=progress, refetch=refetch)
            summary = multi.clip
    except ScorerUnavailable as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(str(exc))
    if multi is not None:
        _print_scorers(console, run, multi)
        if summary is None:
            return
    for problem in summary.problems:
        console.print(f"[yellow]warning:[/yellow] {escape(problem)}")
    if summary.fidelity:
        console.print(f"fidelity to the input (input_cosine, input_ssim): {summary.fidelity} image(s)")
    console.print(
        f"scored {summary.images} image(s) of {escape(str(run))} with {escape(summary.clip_label)} "
        f"({summary.embedded} newly embedded, {summary.forward_passes} forward pass(es)); "
        f"{summary.unscored} row(s) without an image"
    )
    console.print(f"wrote {escape(str(multi.results_path if multi else summary.results_path))}")

    frame = summary.frame
    agg = aggregate(frame)
    if not agg.empty:
        swept = _sweeps_strength(agg)
        table = Table(title=f"per (LoRA, scale, {'strength, ' if swept else ''}provider): mean ± 95% CI half-width "
                            "over prompts x seeds")
        for col in ("LoRA", "scale", *(("strength",) if swept else ()), "provider", "n", "CLIPScore", "style shift",
                    "LoRA effect", "agreement"):
            table.add_column(col, justify="right" if col not in ("LoRA", "provider") else "left")
        for _, row in agg.iterrows():
            table.add_row(
                escape(row["lora"] or "(baseline)"),
                escape(row["scale_key"] or "—"),
                *((f"{row['strength']:g}",) if swept else ()),
                escape(row["provider"]),
                str(row["images"]),
                _ci(row, "clip_score"),
                _ci(row, "style_shift", "+.4f"),
                _ci(row, "lora_effect", ".4f"),
                _ci(row, "agreement"),
            )
        console.print(table)
    if summary.agreement is not None:
        table = Table(title="cross-provider agreement: mean CLIP image cosine over shared cells")
        providers = list(summary.agreement.columns)
        table.add_column("")
        for p in providers:
            table.add_column(escape(str(p)), justify="right")
        for p in providers:
            table.add_row(escape(str(p)), *(_fmt(summary.agreement.at[p, q]) for q in providers))
        console.print(table)
    stats = provider_stats(frame)
    if not stats.empty:
        table = Table(title="per provider")
        for col in ("provider", "images", "failed", "failure rate", "latency min/median/p95 s",
                    "provider queue / inference s (median)", "$/image", "$/MP"):
            table.add_column(col)
        for provider, row in stats.iterrows():
            table.add_row(
                escape(str(provider)),
                str(int(row["images"])),
                str(int(row["failed"])),
                _fmt(row["failure_rate"], ".1%"),
                f"{_fmt(row['latency_min'], '.2f')} / {_fmt(row['latency_median'], '.2f')} / {_fmt(row['latency_p95'], '.2f')}",
                f"{_fmt(row.get('queue_median'), '.2f')} / {_fmt(row.get('inference_median'), '.2f')}",
                _fmt(row["cost_per_image"], ".4f"),
                _fmt(row["cost_per_mp"], ".4f"),
            )
        console.print(table)


def _sweeps_strength(agg: Any) -> bool:
    """Whether aggregate() kept denoising strengths apart (an image-to-image strength sweep)."""
    return "strength" in agg.columns and agg["strength"].nunique(dropna=True) > 1


def _print_scorers(console: "Console", run: Path, multi: Any) -> None:
    """Per plugin scorer: its weights, what was computed, and per (LoRA, scale, provider) the
    mean score and its gain over the same-seed no-LoRA image, each ± 95% CI half-width."""
    from rich.markup import escape
    from rich.table import Table

    from lorascope.evals.metrics import aggregate

    for problem in multi.problems if multi.clip is None else []:
        console.print(f"[yellow]warning:[/yellow] {escape(problem)}")
    plugins = [s for s in multi.scorers if s.name != "clip"]
    for s in plugins:
        note = " [yellow](random weights: numbers carry no meaning)[/yellow]" if s.random_weights else ""
        console.print(
            f"{escape(s.name)}: {escape(s.model_id)}{note} — {multi.computed.get(s.name, 0)} newly scored, "
            f"{multi.cached.get(s.name, 0)} from cache"
        )
    console.print(f"{multi.forward_passes} forward pass(es) in this pass over the images")
    if multi.clip is None:
        console.print(f"wrote {escape(str(multi.results_path))}")
    metrics = [m for s in plugins for m in (s.name, f"{s.name}_gain")]
    agg = aggregate(multi.frame, metrics=metrics) if plugins else None
    if agg is None or agg.empty:
        return
    swept = _sweeps_strength(agg)
    table = Table(title=f"scorers per (LoRA, scale, {'strength, ' if swept else ''}provider): mean ± 95% CI "
                        "half-width; gain = vs same-seed no-LoRA image")
    for col in ("LoRA", "scale", *(("strength",) if swept else ()), "provider", "n",
                *[h for s in plugins for h in (s.name, f"{s.name} gain")]):
        table.add_column(col, justify="right" if col not in ("LoRA", "provider") else "left")
    for _, row in agg.iterrows():
        cells = [_ci(row, m, "+.4f" if m.endswith("_gain") else ".4f") for m in metrics]
        table.add_row(escape(row["lora"] or "(baseline)"), escape(row["scale_key"] or "—"),
                      *((f"{row['strength']:g}",) if swept else ()), escape(row["provider"]),
                      str(row["images"]), *cells)
    console.print(table)


def _print_pairs(console: Any, run: Path, frame: Any, entries: dict, target: float, clip_tolerance: float) -> list:
    """Image-to-image runs: the (scale, strength) pair per LoRA and provider (evals.recommend_pairs)."""
    from rich.markup import escape
    from rich.table import Table

    from lorascope.evals.recommend_pairs import PAIR_RULE, recommend_pairs

    pairs = recommend_pairs(frame, entries, target_fraction=target, clip_tolerance=clip_tolerance)
    if not pairs:
        return []
    console.print(f"pair rule: {escape(PAIR_RULE.format(target=target))}")
    table = Table(title=f"recommended (scale, strength) — {escape(str(run))}")
    for col in ("LoRA", "provider", "scale", "strength", "per strength: scale / style / SSIM to input", "why"):
        table.add_column(col)
    for pair in pairs:
        per = "\n".join(f"{c.strength:g}: {_fmt(c.scale, 'g')} / {_fmt(c.effect, '+.4f')} / {_fmt(c.input_ssim)}"
                         for c in pair.choices)
        table.add_row(escape(pair.lora), escape(pair.provider),
                      "—" if pair.scale is None else f"[bold]{pair.scale:g}[/bold]",
                      "—" if pair.strength is None else f"[bold]{pair.strength:g}[/bold]",
                      escape(per), escape(pair.reason))
    console.print(table)
    return pairs


def recommend(
    run: Path = typer.Argument(..., help="A scored run folder.", file_okay=False),
    write: bool = typer.Option(False, "--write", help="Write the recommendations into the catalogue (in place)."),
    force: bool = typer.Option(
        False, "--force", help="With --write: write even scales measured with a random-weight scorer (tiny-random)."
    ),
    catalogue: Optional[Path] = typer.Option(
        None, "--catalogue", help="Catalogue to update with --write (default: the run's suite catalogue, else loras.yaml)."
    ),
    provider: Optional[str] = typer.Option(
        None, "--provider", help="With several providers in the run: whose evidence --write uses."
    ),
    clip: Optional[str] = typer.Option(None, "--clip", help="Which scoring to use (default: the latest)."),
    target: float = typer.Option(0.9, "--target", min=0.0, max=1.0, help="Fraction of the largest mean style shift to reach."),
    clip_tolerance: float = typer.Option(
        0.05, "--clip-tolerance", min=0.0, max=1.0, help="Allowed relative CLIPScore drop below the no-LoRA baseline."
    ),
    objective: Optional[str] = typer.Option(
        None, "--objective",
        help="Maximise this expression over the stored metrics instead of the default rule, e.g. aesthetic_gain, "
        "'pickscore_gain + 10 * style_shift' (names: clip_score, style_shift, lora_effect, <scorer>, <scorer>_gain, "
        "base_<name>, scale; docs/evals.md). 'human': the scale people preferred in `lorascope review` "
        "(Bradley-Terry over the votes; docs/review.md; needs no scores).",
    ),
    constraint: Optional[list[str]] = typer.Option(
        None, "--constraint", help="With --objective, repeatable: e.g. 'clip_score >= base_clip_score - 0.02'."
    ),
) -> None:
    """Recommend a scale per LoRA and provider from a scored run, beside the catalogue's.

    Rule: the smallest scale whose mean style shift reaches --target of the largest, among
    scales whose mean CLIPScore stays within --clip-tolerance of the no-LoRA baseline."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from lorascope.evals.recommend import (
        RULE,
        CatalogueWriteError,
        random_weight_scores,
        recommend_scales,
        write_recommendations,
    )
    from lorascope.evals.results import resolve_model, scored_frame, scored_models
    from lorascope.harness.store import RunStore

    _open_run(run)
    console = _console()
    with RunStore.open(run) as store:
        entries = store.lora_entries()
        conn = store.connect()
        try:
            model = resolve_model(conn, clip)
            labels = {m: label for m, label, _ in scored_models(conn)}
        finally:
            conn.close()
        suite_catalogue = None
        try:
            suite_catalogue = store.suite().catalogue_path()
        except Exception:  # an older or hand-made run without a suite: fall back below
            suite_catalogue = None
    human = objective == "human"
    if model is None and not human:
        what = f"with {clip} " if clip else ""
        _fail(f"{run} has not been scored {what}yet; run `lorascope score {run}` first")
    from lorascope.evals.fidelity import fidelity_columns

    # image-to-image runs: input_ssim / input_cosine too, so a constraint may name them
    frame = fidelity_columns(scored_frame(run, model), run)
    if objective is None and constraint:
        _fail("--constraint needs --objective (the default rule has its own CLIPScore tolerance)")
    if human:
        from lorascope.evals.ratings import human_recommendations_for_run

        if constraint:
            _fail("--constraint does not apply to --objective human (the votes decide)")
        recs = human_recommendations_for_run(run, entries)
        if not recs:
            _fail(f"{run} has no votes yet; open the review page with `lorascope review {run}`")
        rule_text = ("objective: human: the scale with the highest Bradley-Terry strength from the "
                     "`lorascope review` votes, clamped into the catalogue range")
    elif objective is not None:
        from lorascope.evals.objective import ObjectiveError, parse_objective, recommend_by_objective
        from lorascope.evals.scorer_store import scorer_columns

        frame, _ = scorer_columns(frame, run)
        try:
            chosen_objective = parse_objective(objective, constraint or [], frame)
        except ObjectiveError as exc:
            _fail(str(exc))
        recs = recommend_by_objective(frame, entries, chosen_objective, target_fraction=target)
        rule_text = f"objective: {chosen_objective.describe()}; smallest scale reaching {target:.0%} of the best"
    else:
        recs = recommend_scales(frame, entries, target_fraction=target, clip_tolerance=clip_tolerance)
        rule_text = RULE.format(target=target, tol=clip_tolerance)
    console.print(f"rule: {escape(rule_text)}")
    if model is not None:
        console.print(f"scores: {escape(labels.get(model, model))}")
    if not human and (random_weight_scores(model) or random_weight_scores(labels.get(model))):
        console.print(f"[bold yellow]random weights:[/bold yellow] {escape(labels.get(model, model))} is a random-weight "
                      "CLIP: these scores and scales carry no meaning (tests and demos only); score with real weights, "
                      "e.g. --clip ViT-B-32:openai")
    table = Table(title=f"recommended scales — {escape(str(run))}")
    for col in ("LoRA", "provider", "catalogue", "range", "measured", "basis", "per scale: strength / CLIPScore", "why"):
        table.add_column(col)
    for rec in recs:
        points = "\n".join(
            f"{p.scale:g}: {_fmt(p.strength, '+.4f')} / {_fmt(p.clip_score)}{'' if p.faithful else ' ✗'}"
            for p in rec.points
        )
        measured = "—" if rec.scale is None else f"[bold]{rec.scale:g}[/bold]"
        if rec.strength is not None:  # a strength sweep: decided at this strength (never pooled)
            measured += f"\nat strength {rec.strength:g}"
        table.add_row(
            escape(rec.lora),
            escape(rec.provider),
            _fmt(rec.catalogue_scale, "g"),
            escape(f"{rec.catalogue_range[0]:g}–{rec.catalogue_range[1]:g}") if rec.catalogue_range else "—",
            measured,
            rec.basis.replace("_", " ") if objective is None or human else "objective",
            escape(points),
            escape(rec.reason),
        )
    console.print(table)
    for rec in recs:
        for warning in rec.warnings:
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    pairs = _print_pairs(console, run, frame, entries, target, clip_tolerance) if objective is None else []
    (run / "recommend.json").write_text(
        json.dumps({"run": str(run), "clip_model": model, "target": target, "clip_tolerance": clip_tolerance,
                    "objective": rule_text, "objective_expr": objective,
                    "constraints": list(constraint or []),
                    "recommendations": [r.as_dict() for r in recs],
                    **({"pairs": [p.as_dict() for p in pairs]} if pairs else {})}, indent=2),
        encoding="utf-8",
    )
    if not write:
        return
    from lorascope.evals.fidelity import has_inputs

    if has_inputs(frame):  # the catalogue's scale.recommended is a text-to-image fact
        _fail(f"--write: {run} is image-conditioned (its scales were measured from input pictures"
              f"{' at a denoising strength' if any(r.strength is not None for r in recs) else ''}); "
              "the catalogue's recommended scale is for text-to-image, so nothing was written. "
              "The pair is in recommend.json", code=1)
    chosen = [r for r in recs if r.scale is not None and (provider is None or r.provider == provider)]
    by_lora: dict[str, list] = {}
    for rec in chosen:
        by_lora.setdefault(rec.lora, []).append(rec)
    ambiguous = {lora: rs for lora, rs in by_lora.items() if len({r.scale for r in rs}) > 1}
    if ambiguous:
        names = ", ".join(f"{lora} ({', '.join(f'{r.provider}: {r.scale:g}' for r in rs)})" for lora, rs in ambiguous.items())
        _fail(f"providers disagree on {names}; pick one with --provider")
    if provider is not None and not any(r.provider == provider for r in recs):
        _fail(f"--provider {provider}: not in this run (providers: {', '.join(sorted({r.provider for r in recs}))})")
    target_file = catalogue or suite_catalogue
    if target_file is None:
        from lorascope.registry.catalogue import default_catalogue_path

        target_file = default_catalogue_path()
    if not Path(target_file).is_file():
        _fail(f"catalogue {target_file} not found (pass --catalogue PATH)")
    from lorascope.registry.catalogue import check_catalogue

    errors = [p for p in check_catalogue(Path(target_file))[1] if p.severity == "error"]
    if errors:  # never rewrite a file we cannot read: its author's text would be lost
        _fail(f"{errors[0]} ({len(errors)} error(s)); fix the catalogue before --write "
              f"(`lorascope registry validate {target_file}` lists them)", code=1)
    try:
        written = write_recommendations(
            Path(target_file), [rs[0] for rs in by_lora.values()], run_dir=run,
            clip_label="human votes (lorascope review)" if human else labels.get(model, model),
            force=force,
        )
    except CatalogueWriteError as exc:
        _fail(str(exc), code=1)
    if written:
        console.print(f"updated scale.recommended of {', '.join(written)} in {escape(str(target_file))}")
    else:
        console.print("nothing to write: no LoRA got a recommendation")


def compare(
    baseline: Path = typer.Argument(..., help="The baseline run folder.", file_okay=False),
    run: Path = typer.Argument(..., help="The run to check against it.", file_okay=False),
    tolerance: Optional[list[str]] = typer.Option(
        None,
        "--tolerance",
        help="NAME=VALUE, repeatable: image_cosine (min, 0.90), ssim (min, 0.60), clip_score (max drop, 0.10), "
        "style_shift (max drop, 0.05), latency_ratio (max growth of a provider's median latency; off), "
        "same_cosine / same_ssim (non-deterministic providers: 'same' at/above, 0.995 / 0.98).",
    ),
    junit: Optional[Path] = typer.Option(
        None, "--junit", dir_okay=False,
        help="Also write JUnit XML for CI: one test case per cell, a failure for each regressed, drifted or "
        "missing cell, new cells skipped (the exit code does not change: drift alone still exits 0).",
    ),
    markdown: Optional[Path] = typer.Option(
        None, "--markdown", dir_okay=False,
        help="Also write a Markdown summary: overall verdict, per-provider counts, the worst cells.",
    ),
    step_summary: bool = typer.Option(
        True, "--step-summary/--no-step-summary",
        help="Append the Markdown summary to $GITHUB_STEP_SUMMARY when it is set (GitHub Actions' job summary).",
    ),
    clip: Optional[str] = typer.Option(None, "--clip", help="CLIP model (default: the one the baseline was scored with). " + CLIP_HELP),
    show: str = typer.Option("changed", "--show", help="Table rows: changed (not 'same') or all."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    allow_cached: bool = typer.Option(
        False, "--allow-cached",
        help="Accept a RUN whose every image came from the shared generation cache (it then compares stored "
        "results, not what the provider does today). Without it such a comparison exits 1.",
    ),
    allow_unrelated: bool = typer.Option(
        False, "--allow-unrelated", help="Compare runs of different suites, or with no cell in common (refused: exit 2)."),
) -> None:
    """Compare RUN against BASELINE cell by cell; writes compare.json in RUN.

    Prints the overall verdict and each provider's verdict counts first, then the changed
    cells. Exit 0 when nothing regressed, 1 on a regression or a damaged image, or when RUN
    came entirely from the shared cache (generate it with `lorascope run SUITE --out RUN
    --fresh`) unless --allow-cached, 2 when the runs are unrelated (different suites, no
    cell in common) unless --allow-unrelated."""
    from rich.markup import escape
    from rich.table import Table

    from lorascope.evals.compare import Tolerances, UnrelatedRuns, compare_runs, worst_first
    from lorascope.evals.scorer import ScorerUnavailable

    _open_run(baseline)
    _open_run(run)
    if show not in ("changed", "all"):
        _fail(f"--show {show!r}: expected 'changed' or 'all'")
    try:
        tolerances = Tolerances.parse(tolerance)
    except ValueError as exc:
        _fail(str(exc))
    console = _console()
    try:
        report = compare_runs(baseline, run, clip=clip, tolerances=tolerances, progress=progress,
                              allow_unrelated=allow_unrelated, allow_cached=allow_cached)
    except (ScorerUnavailable, UnrelatedRuns) as exc:
        _fail(str(exc))
    colour = {"same": "green", "drifted": "yellow", "regressed": "red", "damaged": "red", "missing": "magenta",
              "new": "cyan"}
    _print_verdict_first(console, report, colour)
    rows = worst_first([c for c in report.cells if show == "all" or c.verdict != "same"])
    if rows:
        table = Table(title=f"{escape(str(run))} vs baseline {escape(str(baseline))}")
        for col in ("verdict", "cell", "cos", "SSIM", "ΔCLIPScore", "Δstyle", "Δlatency s", "why", "images"):
            table.add_column(col)
        for c in rows:
            table.add_row(
                f"[{colour[c.verdict]}]{c.verdict}[/{colour[c.verdict]}]",
                escape(c.label()),
                _fmt(c.image_cosine, ".4f"),
                _fmt(c.ssim, ".4f"),
                _fmt(c.clip_score_delta, "+.4f"),
                _fmt(c.style_shift_delta, "+.4f"),
                _fmt(c.latency_delta_s, "+.2f"),
                escape("; ".join(c.reasons)),
                escape("\n".join(p for p in (c.baseline_image, c.run_image) if p)),
            )
        console.print(table)
    ptable = Table(title="per provider")
    for col in ("provider", "images (base → run)", "median latency s (base → run)",
                "provider queue / inference s (base → run)", "$/image (base → run)"):
        ptable.add_column(col)
    for name, info in report.providers.items():
        ptable.add_row(
            escape(name),
            f"{info['baseline_images']} → {info['run_images']}",
            f"{_fmt(info['baseline_latency_median_s'], '.2f')} → {_fmt(info['run_latency_median_s'], '.2f')}",
            f"{_fmt(info.get('baseline_queue_median_s'), '.2f')} / {_fmt(info.get('baseline_inference_median_s'), '.2f')}"
            f" → {_fmt(info.get('run_queue_median_s'), '.2f')} / {_fmt(info.get('run_inference_median_s'), '.2f')}",
            f"{_fmt(info['baseline_cost_per_image_usd'], '.4f')} → {_fmt(info['run_cost_per_image_usd'], '.4f')}",
        )
    console.print(ptable)
    _write_ci_outputs(report, junit, markdown, step_summary)
    from lorascope.evals.compare import version_notes

    said_first = set(version_notes(report.providers))  # printed with the verdict
    for note in report.notes[1 if report.cache_only else 0:]:
        if note not in said_first:
            console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print(f"wrote {escape(str(run / 'compare.json'))}; side by side: "
                  f"lorascope report {escape(str(run))} --compare {escape(str(baseline))}", highlight=False)
    if report.cache_only and not report.allow_cached:
        raise typer.Exit(1)
    if report.regressed:
        raise typer.Exit(1)


def _print_verdict_first(console: "Console", report: Any, colour: dict[str, str]) -> None:
    """The answer before the evidence: overall verdict with counts, one line per provider,
    and (if so) the statement that the run came entirely from the cache."""
    from rich.markup import escape

    from lorascope.evals.compare import VERDICTS

    tint = colour.get(report.overall, "bold")
    console.print(f"overall: [{tint}]{escape(report.headline())}[/{tint}]", highlight=False)
    for provider, counts in report.provider_counts().items():
        parts = ", ".join(f"[{colour.get(v, 'bold')}]{n} {v}[/]" for v in VERDICTS if (n := counts.get(v)))
        console.print(f"  {escape(provider)}: {parts}", highlight=False)
    if report.cache_only:
        label = "[yellow]note:[/yellow]" if report.allow_cached else "[red]error:[/red]"
        console.print(f"{label} {escape(report.notes[0])}", highlight=False)
    from lorascope.evals.compare import version_notes

    for note in version_notes(report.providers):  # the likeliest cause, in words, before the cells
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)


def _write_ci_outputs(report: Any, junit: Optional[Path], markdown: Optional[Path], step_summary: bool) -> None:
    """`compare --junit / --markdown`, and $GITHUB_STEP_SUMMARY (lorascope.evals.ci_outputs)."""
    from rich.markup import escape

    from lorascope.evals.ci_outputs import append_step_summary, markdown_summary, write_junit, write_text

    written = []
    try:
        if junit is not None:
            written.append(str(write_junit(report, junit)))
        text = markdown_summary(report) if markdown is not None or step_summary else None
        if markdown is not None and text is not None:
            written.append(str(write_text(markdown, text)))
        appended = append_step_summary(text) if step_summary and text is not None else None
        if appended is not None:
            written.append(f"{appended} (appended: $GITHUB_STEP_SUMMARY)")
    except OSError as exc:
        _fail(f"cannot write the CI outputs: {exc}")
    if written:
        _console().print(f"wrote {escape(', '.join(written))}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    app.command("score")(score)
    app.command("recommend")(recommend)
    app.command("compare")(compare)
    from lorascope.evals.cli_ratings import app as ratings_app

    app.add_typer(ratings_app, name="ratings")
