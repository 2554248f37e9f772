"""Reading a run folder into `RunData`: the harness store for rows, suite and catalogue
entries; the evals stage for scores, aggregates, recommendations and provider statistics.

This is the only module of the reports stage that knows where earlier stages keep things.
Scores come from evals' `scored_frame`, which joins them on (cell, image index, image hash),
so a report never shows a stale score beside a regenerated image.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lorascope.reports import fmt
from lorascope.reports.human import human_inputs
from lorascope.reports.errors import ReportError
from lorascope.reports.inputs import PairChoice, ProviderStats, Recommendation, RunData, ScaleAggregate, ScorerInfo

AGGREGATE_METRICS = ("clip_score", "style_shift", "lora_effect", "agreement")


def open_store(run_dir: Path):
    from lorascope.harness.store import DB_NAME, RunStore

    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    if not (run_dir / DB_NAME).is_file():
        raise ReportError(f"{run_dir}: not a run folder (no {DB_NAME}); run `lorascope run SUITE --out {run_dir}` first")
    return RunStore.open(run_dir)


def _score_labels(store) -> dict[str, str]:
    """CLIP model id -> its label (e.g. 'ViT-B-32:openai'), for the models that scored the run."""
    from lorascope.evals.results import scored_models

    conn = store.connect()
    try:
        return {model: label for model, label, _ in scored_models(conn)}
    finally:
        conn.close()


def is_scored(frame: pd.DataFrame) -> bool:
    return any(c in frame.columns and frame[c].notna().any() for c in ("clip_score", "style_shift"))


def aggregates_from(frame: pd.DataFrame, extra: tuple[str, ...] = ()) -> list[ScaleAggregate]:
    """The evals stage's per (lora, scale, provider) means and 95% CIs as report inputs;
    `extra`: plugin scorer columns (evals.scorer_store) to aggregate too."""
    from lorascope.evals.metrics import AGGREGATE_METRICS as EVALS_METRICS, aggregate

    table = aggregate(frame, metrics=(*EVALS_METRICS, *extra))
    out = []
    for rec in table.to_dict("records") if len(table) else []:
        for metric in (*AGGREGATE_METRICS, *extra):
            mean = fmt.number(rec.get(f"{metric}_mean"))
            if mean is None:
                continue
            lora = str(rec.get("lora") or "")
            out.append(ScaleAggregate(
                lora=lora, provider=str(rec["provider"]),
                scale=None if not lora else fmt.number(rec.get("scale")),
                metric=metric, mean=mean, strength=fmt.number(rec.get("strength")),
                ci_low=fmt.number(rec.get(f"{metric}_low")), ci_high=fmt.number(rec.get(f"{metric}_high")),
                n=int(rec.get(f"{metric}_n") or 0),
            ))
    return out


def provider_stats_from(frame: pd.DataFrame) -> list[ProviderStats]:
    from lorascope.evals.metrics import provider_stats

    table = provider_stats(frame)
    sources = {}
    if "cost_source" in frame.columns:
        for provider, values in frame.groupby("provider")["cost_source"]:
            found = sorted({str(v) for v in values.dropna() if str(v)})
            sources[provider] = ", ".join(found)
    out = []
    for provider, rec in table.to_dict("index").items() if len(table) else []:
        out.append(ProviderStats(
            provider=str(provider), images=int(rec.get("images") or 0), failed=int(rec.get("failed") or 0),
            failure_rate=fmt.number(rec.get("failure_rate")),
            latency_min=fmt.number(rec.get("latency_min")), latency_median=fmt.number(rec.get("latency_median")),
            latency_p95=fmt.number(rec.get("latency_p95")), cost_total=fmt.number(rec.get("cost_total")),
            queue_median=fmt.number(rec.get("queue_median")), inference_median=fmt.number(rec.get("inference_median")),
            cost_per_image=fmt.number(rec.get("cost_per_image")), cost_per_mp=fmt.number(rec.get("cost_per_mp")),
            cost_source=sources.get(provider, ""),
        ))
    return out


def recommendations_from(frame: pd.DataFrame, loras: dict, objective=None,
                         run_dir: Path | None = None) -> list[Recommendation]:
    """The evals stage's recommended scale per (lora, provider), by its documented rule, or
    by the user's objective (evals.objective) when `recommend --objective` chose one, or by
    the run's votes when that objective was `human`."""
    from lorascope.evals.objective import HUMAN
    from lorascope.evals.recommend import recommend_scales

    if objective == HUMAN:
        from lorascope.evals.ratings import human_recommendations_for_run

        chosen = human_recommendations_for_run(run_dir, loras)
    elif objective is not None:
        from lorascope.evals.objective import recommend_by_objective

        chosen = recommend_by_objective(frame, loras, objective)
    else:
        chosen = recommend_scales(frame, loras)
    out = []
    for rec in chosen:
        reason = "; ".join([rec.reason, *rec.warnings]) if rec.warnings else rec.reason
        out.append(Recommendation(lora=rec.lora, provider=rec.provider, scale=fmt.number(rec.scale), reason=reason,
                                  strength=fmt.number(getattr(rec, "strength", None))))
    return out


def pairs_from(frame: pd.DataFrame, loras: dict) -> list[PairChoice]:
    """The (scale, strength) pair per (lora, provider) of an image-to-image run (the rule
    `lorascope recommend` prints second); empty for a run without a strengths axis."""
    from lorascope.evals.recommend_pairs import recommend_pairs

    return [PairChoice(lora=p.lora, provider=p.provider, scale=p.scale, strength=p.strength, reason=p.reason)
            for p in recommend_pairs(frame, loras)]


def load_run_data(run_dir: Path) -> RunData:
    """Everything a run report shows, from the run folder."""
    run_dir = Path(run_dir)
    from lorascope.evals.fidelity import fidelity_columns
    from lorascope.evals.results import scored_frame

    with open_store(run_dir) as store:
        loras = store.lora_entries()
        suite_name = store.get_meta("suite_name") or run_dir.name
        try:
            suite = store.suite().model_dump(mode="json")
        except Exception:  # noqa: BLE001 - an old or hand-made run: the report still renders
            suite = {}
        labels = _score_labels(store)
    # the scores of the CLIP model that last scored the run (NaN where an image has none yet)
    frame = fidelity_columns(scored_frame(run_dir), run_dir)  # img2img: input_path, input_cosine, input_ssim
    model = str(frame["clip_model"].iloc[0]) if len(frame) else ""
    score_model = labels.get(model, model)
    scored = is_scored(frame)
    frame, scorers, objective, recommended_by = _with_scorers(run_dir, frame)
    return RunData(
        run_dir=run_dir,
        **human_inputs(run_dir, frame, scored),
        results=frame,
        suite_name=suite_name,
        suite=suite,
        loras=loras,
        scored=scored,
        score_model=score_model if scored else "",
        aggregates=aggregates_from(frame, tuple(s.name for s in scorers)) if scored else [],
        recommendations=recommendations_from(frame, loras, objective, run_dir) if scored else [],
        pairs=pairs_from(frame, loras) if scored else [],
        recommended_by=recommended_by if scored else "",
        scorers=scorers,
        provider_stats=provider_stats_from(frame),
    )


def _with_scorers(run_dir: Path, frame: pd.DataFrame):
    """The frame with every stored plugin scorer's columns, those scorers, and the objective
    that chooses the recommendations (the user's from `recommend --objective`, else the
    default rule), with its description."""
    from lorascope.evals.objective import HUMAN, run_objective
    from lorascope.evals.recommend import DEFAULT_CLIP_TOLERANCE, DEFAULT_TARGET_FRACTION, RULE
    from lorascope.evals.scorer_store import scorer_columns

    frame, stored = scorer_columns(frame, run_dir)
    scorers = [ScorerInfo(name=s.scorer, label=s.label, model_id=s.model_id, random_weights=s.random_weights)
               for s in stored]
    objective, note = run_objective(run_dir, frame)
    if objective == HUMAN:
        text = ("human votes: the scale with the highest Bradley-Terry strength from `lorascope review` "
                "(from recommend.json)")
    elif objective is not None:
        text = f"your objective: {objective.describe()} (from recommend.json)"
    else:
        text = "default rule: " + RULE.format(target=DEFAULT_TARGET_FRACTION, tol=DEFAULT_CLIP_TOLERANCE)
        if note:
            text += f" ({note})"
    return frame, scorers, objective, text
