"""Build the run report's view model from a `RunData` (rows + eval outputs).

All choices a reader relies on are made here, in testable Python: which rows and columns a
grid has, which scale is marked as recommended, which cells are listed as problems, how
numbers are rounded. The template only displays the result.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from lorascope.registry.models import LoraEntry
from lorascope.reports import fmt
from lorascope.reports.figures import ThumbIndex, asset_url, image_file, row_ok, row_nsfw, sha_of
from lorascope.reports.thumbs import ThumbFailure
from lorascope.reports.grid import EXTRA_AXES, build_grid, extra_value, stored_sha
from lorascope.reports.howto import random_weight_banner, uses_random_weights
from lorascope.reports.human import agreement_rows, human_plots, human_views
from lorascope.reports.inputs import RunData, ScaleAggregate
from lorascope.reports.plots import Curve, CurvePoint, PlotSpec, build_plot, color_for
from lorascope.reports.viewmodels import (
    Figure,
    GridColumn,
    GridSection,
    KeyValue,
    LoraSection,
    PairView,
    PlotView,
    ProblemRow,
    ProviderStatsRow,
    RecommendationView,
    RunReportView,
)

_ANCHOR = re.compile(r"[^a-z0-9-]+")


def _anchor(lora: str) -> str:
    return "lora-" + (_ANCHOR.sub("-", lora.lower()).strip("-") or "x")


def _anchors(loras: list[str]) -> dict[str, str]:
    """A page anchor per LoRA, unique: a stack `a+b` and a LoRA `a-b` would both be lora-a-b,
    and the anchor also names the grid's view in the URL fragment."""
    out: dict[str, str] = {}
    taken = {"all-loras"}
    for lora in loras:
        anchor, n = _anchor(lora), 2
        while anchor in taken:
            anchor, n = f"{_anchor(lora)}-{n}", n + 1
        taken.add(anchor)
        out[lora] = anchor
    return out


def _scale_key(value: Any) -> float | None:
    if fmt.is_missing(value):
        return None
    return round(float(value), 6)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns the report reads, with defaults, plus `variant`: the provider, and its
    options when a suite sweeps an option axis (e.g. fal acceleration)."""
    df = frame.copy()
    for column, default in (
        ("lora", ""), ("provider", "?"), ("prompt_id", ""), ("prompt", ""), ("status", ""),
        ("error", None), ("image_path", None), ("options", ""), ("scales", ""),
    ):
        if column not in df.columns:
            df[column] = default
    for column in ("scale", "seed", "latency_s", "cost_usd", "width", "height"):
        if column not in df.columns:
            df[column] = math.nan
    df["lora"] = df["lora"].fillna("").astype(str)
    df["provider"] = df["provider"].fillna("?").astype(str)
    df["prompt_id"] = df["prompt_id"].fillna("").astype(str)
    axes = df["axes"] if "axes" in df.columns else df["options"]
    opts = axes.map(fmt.options_text)
    df["variant"] = [p if not o else f"{p} [{o}]" for p, o in zip(df["provider"], opts)]
    df["scale_key"] = df["scale"].map(_scale_key)
    df["seed_key"] = df["seed"].map(fmt.seed)
    return df


def _ordered_unique(values) -> list:
    seen: dict = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def _lookup(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Grid position -> its row: the first image when a generation has several
    (num_images > 1), else the row that says why there is none. Plain dicts: pandas row
    access is the slow part of a 2,000-image report."""
    table: dict[tuple, dict[str, Any]] = {}
    for row in records:
        key = (row["lora"], row["column_key"], row["variant"], row["prompt_id"], row["seed_key"],
               *(extra_value(row, column) for column, _ in EXTRA_AXES))
        current = table.get(key)
        if current is None or (not row_ok(current) and row_ok(row)):
            table[key] = row
    return table


def _column_key(row: dict[str, Any]) -> str:
    if row["lora"] == "":
        return "baseline"
    if "+" in row["lora"] and row.get("scales"):
        return str(row["scales"])
    return fmt.scale(row["scale_key"])


def _curves(
    lora: str, metric: str, providers: list[str], aggs: list[ScaleAggregate],
    recs: dict[tuple[str, str], float | None], with_baseline: bool,
    rec_strengths: dict[tuple[str, str], float | None] | None = None,
) -> list[Curve]:
    """One curve per provider; in a strength sweep one per (provider, strength), each with its
    own strength's baseline level, and the recommended scale drawn on the strength it was
    decided at only (a mean over several strengths would answer no one's question)."""
    strengths = _strengths(lora, aggs)
    levels: list[float | None] = list(strengths) if len(strengths) > 1 else [None]
    curves = []
    for variant in providers:
        for level in levels:
            def here(a: ScaleAggregate) -> bool:
                return a.provider == variant and a.metric == metric and (
                    level is None or (a.strength is not None and math.isclose(a.strength, level)))

            points = [CurvePoint(x=float(a.scale), mean=a.mean, lo=a.ci_low, hi=a.ci_high, n=a.n)
                      for a in aggs if a.lora == lora and a.scale is not None and here(a)]
            baseline = None
            if with_baseline:
                base = [a for a in aggs if a.lora == "" and here(a)]
                baseline = base[0].mean if base else None
            recommended = recs.get((lora, variant))
            if level is not None:
                decided_at = (rec_strengths or {}).get((lora, variant))
                recommended = recommended if decided_at is not None and math.isclose(decided_at, level) else None
            label = variant if level is None else (
                f"{variant} · strength {level:g}" if len(providers) > 1 else f"strength {level:g}")
            if points:
                curves.append(Curve(label=label, color=color_for(len(curves)), points=points,
                                    recommended_x=recommended, baseline_y=baseline))
    return curves


def _strengths(lora: str, aggs: list[ScaleAggregate]) -> list[float]:
    """The denoising strengths a LoRA's aggregates were kept apart by (empty: text-to-image)."""
    return sorted({a.strength for a in aggs if a.lora == lora and a.strength is not None})


def _plots(lora: str, entry: LoraEntry | None, providers: list[str], data: RunData,
           recs: dict[tuple[str, str], float | None]) -> list[PlotView]:
    catalogue_x = entry.scale.recommended if entry else None
    rec_strengths = {(r.lora, r.provider): r.strength for r in data.recommendations}
    swept = len(_strengths(lora, data.aggregates)) > 1
    legend = ("one curve per denoising strength (never pooled); shaded: 95% CI; dashed: recommended scale, on the "
              "strength it was decided at; dotted grey: catalogue's") if swept else PlotSpec.legend

    def curves(metric: str, with_baseline: bool) -> list[Curve]:
        return _curves(lora, metric, providers, data.aggregates, recs, with_baseline, rec_strengths)

    specs = [
        PlotSpec(title="Style shift vs scale (mean, 95% CI)", y_label="style shift",
                 curves=curves("style_shift", False), catalogue_x=catalogue_x, value_format="{:+.3f}", legend=legend),
        PlotSpec(title="CLIPScore vs scale (mean, 95% CI)", y_label="CLIPScore",
                 curves=curves("clip_score", True), catalogue_x=catalogue_x, legend=legend),
    ]
    for scorer in data.scorers:  # each plugin scorer's curve; the baseline level is its no-LoRA mean
        specs.append(PlotSpec(
            title=f"{scorer.label} vs scale (mean, 95% CI)", y_label=scorer.name,
            curves=curves(scorer.name, True), catalogue_x=catalogue_x, legend=legend,
            note=f"{scorer.label}: RANDOM WEIGHTS, the numbers carry no meaning" if scorer.random_weights else ""))
    specs += _fidelity_specs(lora, data)
    return [build_plot(spec) for spec in specs]


def _fidelity_specs(lora: str, data: RunData) -> list[PlotSpec]:
    """Image-to-image runs: fidelity to the input against style shift, one curve per strength
    (per provider too when several), one point per scale, so the trade-off shows at a glance."""
    from lorascope.evals.fidelity import fidelity_by_strength

    table = fidelity_by_strength(data.results)
    mine = table[table["lora"] == lora]
    if mine.empty:
        return []
    many = mine["provider"].nunique() > 1
    specs = []
    plotted = [("input_ssim", "SSIM to the input"), ("input_cosine", "CLIP cosine to the input")]
    if mine["kept_ssim"].notna().any():  # inpaint: what was to stay, outside the mask
        plotted.insert(0, ("kept_ssim", "SSIM outside the mask"))
    for column, name in plotted:
        curves = []
        for index, ((provider, strength), group) in enumerate(mine.groupby(["provider", "strength"], sort=True)):
            label = f"{provider} · strength {strength:g}" if many else f"strength {strength:g}"
            points = [CurvePoint(x=float(r.style_shift), mean=float(getattr(r, column)), n=int(r.n),
                                 label=f"scale {r.scale:g} (style shift {r.style_shift:+.3f})")
                      for r in group.itertuples(index=False) if not math.isnan(float(getattr(r, column)))]
            if points:
                curves.append(Curve(label=label, color=color_for(index), points=points))
        specs.append(PlotSpec(title=f"Fidelity vs style per strength: {name}",
                              y_label=column, x_label="style shift (mean)", curves=curves,
                              legend="one curve per strength, one point per scale (hover a point for its scale)"))
    return specs


def _columns(lora: str, df: pd.DataFrame, data: RunData, recs: dict[tuple[str, str], float | None]) -> list[GridColumn]:
    """The LoRA's scale columns (baseline first) and which of them are recommended, by the
    catalogue and by which providers' runs."""
    entry = data.loras.get(lora)
    mine = df[df["lora"] == lora]
    providers = _ordered_unique(df["provider"])
    scale_cols = sorted(
        _ordered_unique(zip(mine["column_key"], mine["scale_key"])),
        key=lambda kv: (kv[1] if kv[1] is not None else math.inf, kv[0]),
    )
    catalogue_scale = entry.scale.recommended if entry else None
    columns = [GridColumn(key="baseline", label="no LoRA (baseline)", scale=None)]
    for key, scale_value in scale_cols:
        columns.append(GridColumn(
            key=key,
            label=f"scale {key}",
            scale=scale_value,
            catalogue_recommended=catalogue_scale is not None and scale_value is not None
            and math.isclose(scale_value, catalogue_scale),
            run_recommended_by=[p for p in providers if recs.get((lora, p)) is not None
                                and scale_value is not None and math.isclose(recs[(lora, p)], scale_value)],
        ))
    return columns


def _marks(columns: list[GridColumn]) -> dict[str, list[str]]:
    """Badges for the scale column headers of a LoRA's grid."""
    marks = {}
    for column in columns:
        badges = (["catalogue rec."] if column.catalogue_recommended else []) + (
            [f"run rec.: {', '.join(column.run_recommended_by)}"] if column.run_recommended_by else [])
        if badges:
            marks[column.key] = badges
    return marks


def _section(
    lora: str, df: pd.DataFrame, variants: list[str], data: RunData,
    recs: dict[tuple[str, str], float | None], columns: list[GridColumn], grid: GridSection,
    inputs: dict[str, Figure] | None = None,
) -> LoraSection:
    entry = data.loras.get(lora)
    provider_of = dict(zip(df["variant"], df["provider"]))
    providers = _ordered_unique(provider_of[v] for v in variants)
    catalogue_scale = entry.scale.recommended if entry else None
    recommendations = []
    for provider in providers:
        if (lora, provider) not in recs:
            continue
        rec = recs[(lora, provider)]
        found = next((r for r in data.recommendations if r.lora == lora and r.provider == provider), None)
        reason = found.reason if found else ""
        at = f" at strength {found.strength:g}" if found is not None and found.strength is not None and rec is not None else ""
        recommendations.append(RecommendationView(
            provider=provider,
            scale=(fmt.scale(rec) + at) if rec is not None else "none",
            catalogue_scale=fmt.scale(catalogue_scale),
            agrees=rec is not None and catalogue_scale is not None and math.isclose(rec, catalogue_scale),
            reason=reason,
        ))
    pairs = [PairView(provider=p.provider, scale=fmt.scale(p.scale) if p.scale is not None else "none",
                      strength=f"{p.strength:g}" if p.strength is not None else "none", reason=p.reason)
             for p in data.pairs if p.lora == lora and p.provider in providers]
    return LoraSection(
        id=lora,
        anchor=grid.anchor,
        name=entry.name if entry else lora,
        kind=entry.kind if entry else ("stack" if "+" in lora else ""),
        is_stack="+" in lora,
        triggers=list(entry.triggers) if entry else [],
        style_prompt=(entry.style_prompt or "") if entry else "",
        notes=(entry.notes or "") if entry else "",
        license=(entry.license or "") if entry else "",
        catalogue_scale=(f"{entry.scale.recommended:g} (range {entry.scale.range[0]:g}–{entry.scale.range[1]:g})"
                         if entry else ""),
        providers=variants,
        columns=columns,
        grid=grid,
        recommendations=recommendations,
        pairs=pairs,
        plots=[*(_plots(lora, entry, providers, data, recs) if data.scored else []),
               *human_plots(data.human, lora, entry.scale.recommended if entry else None)],
        human=human_views(data.human, lora),
        inputs=[inputs[key] for key in _ordered_unique(_input_ids(df[df["lora"] == lora])) if key in (inputs or {})],
    )


def _input_ids(df: pd.DataFrame) -> list[str]:
    if "init_image" not in df.columns:
        return []
    return [str(v) for v in df["init_image"] if isinstance(v, str) and v]


def _input_files(df: pd.DataFrame, run_dir: Path, column: str = "input_path") -> dict[str, Path]:
    """{input image id: its copy in the run} (evals.fidelity keeps one per input, and per
    inpaint mask with column="mask_path", when it scores)."""
    if column not in df.columns or "init_image" not in df.columns:
        return {}
    found: dict[str, Path] = {}
    for key, rel in zip(df["init_image"], df[column]):
        if isinstance(key, str) and key and isinstance(rel, str) and rel and key not in found:
            found[key] = run_dir / rel
    return found


def _input_figure(key: str, path: Path, thumbs: ThumbIndex) -> Figure:
    label = f"input {key}"
    thumb = thumbs.get(path)
    if isinstance(thumb, ThumbFailure):
        return Figure(provider="input", status="missing", reason=thumb.reason, alt=label, title=label)
    return Figure(provider="input", status="ok", thumb=asset_url(thumb.path, thumbs.report_dir),
                  full=asset_url(path, thumbs.report_dir), thumb_width=thumb.width, thumb_height=thumb.height,
                  alt=label, title=f"{label}: the picture these images start from", caption=[f"image {key}"],
                  sha=stored_sha(path) or "")


def _seed_sort(seed: str) -> tuple[int, int | str]:
    try:
        return (0, int(seed))
    except ValueError:
        return (1, seed)


def _provider_table(data: RunData, df: pd.DataFrame) -> list[ProviderStatsRow]:
    endpoints = _per_variant(df, "endpoint")
    versions = _per_variant(df, "model_version")
    rows = []
    for stats in data.provider_stats:
        rows.append(ProviderStatsRow(
            provider=stats.provider,
            endpoint=endpoints.get(stats.provider, ""),
            model_version=versions.get(stats.provider, ""),
            images=str(stats.images),
            failed=str(stats.failed),
            failure_rate=fmt.percent(stats.failure_rate),
            latency_min=fmt.seconds(stats.latency_min),
            latency_median=fmt.seconds(stats.latency_median),
            latency_p95=fmt.seconds(stats.latency_p95),
            queue_median=fmt.seconds(stats.queue_median),
            inference_median=fmt.seconds(stats.inference_median),
            cost_total=fmt.usd(stats.cost_total),
            cost_per_image=fmt.usd(stats.cost_per_image),
            cost_per_mp=fmt.usd(stats.cost_per_mp),
            cost_source=stats.cost_source,
        ))
    return rows


def _per_variant(df: pd.DataFrame, column: str) -> dict[str, str]:
    if column not in df.columns:
        return {}
    out = {}
    for variant, values in df.groupby("variant", sort=False)[column]:
        found = [str(v) for v in _ordered_unique(values.dropna()) if str(v)]
        out[variant] = ", ".join(found)
    for provider, values in df.groupby("provider", sort=False)[column]:
        found = [str(v) for v in _ordered_unique(values.dropna()) if str(v)]
        out.setdefault(provider, ", ".join(found))
    return out


def _problems(records: list[dict[str, Any]]) -> list[ProblemRow]:
    problems = []
    for row in records:
        failed, nsfw = not row_ok(row), row_nsfw(row)
        if not (failed or nsfw):
            continue
        lora = row["lora"] or "no LoRA"
        scale = "" if row["lora"] == "" else (str(row["scales"]) if "+" in row["lora"] and row["scales"]
                                               else fmt.scale(row["scale_key"]))
        reason = ""
        if failed:
            error = row.get("error")
            reason = str(error) if not fmt.is_missing(error) and error else f"status: {row['status']}"
        else:
            reason = "flagged NSFW by the provider"
        problems.append(ProblemRow(
            kind="failed" if failed else "nsfw",
            provider=row["variant"], lora=lora, scale=scale, prompt_id=row["prompt_id"],
            seed=row["seed_key"], reason=reason,
        ))
    # failures first (they cost a re-run), then flagged images; stable within each kind
    problems.sort(key=lambda problem: problem.kind != "failed")
    return problems


def _summary(data: RunData, df: pd.DataFrame, records: list[dict[str, Any]], variants: list[str]) -> list[KeyValue]:
    ok = pd.Series([row_ok(r) for r in records], dtype=bool)
    nsfw = sum(1 for r in records if row_nsfw(r))
    versions = _per_variant(df, "model_version")
    cost = pd.to_numeric(df["cost_usd"], errors="coerce")
    latency = pd.to_numeric(df["latency_s"], errors="coerce")
    sources = ""
    if "cost_source" in df.columns:
        counts = df.loc[cost.notna(), "cost_source"].fillna("unknown").value_counts()
        sources = ", ".join(f"{n} {src}" for src, n in counts.items())
    items = [
        KeyValue(key="Suite", value=data.suite_name or "(unnamed)"),
        KeyValue(key="Run folder", value=str(data.run_dir)),
        KeyValue(key="Providers", value=", ".join(variants) or "none"),
        KeyValue(key="Model versions", value="; ".join(
            f"{v}: {versions.get(v) or 'not reported'}" for v in variants) or "–"),
        KeyValue(key="LoRAs", value=str(len([x for x in _ordered_unique(df["lora"]) if x]))),
        KeyValue(key="Generations", value=f"{len(df)} ({int(ok.sum())} ok, {len(df) - int(ok.sum())} failed)"),
        KeyValue(key="NSFW-flagged", value=str(nsfw)),
        KeyValue(key="Total cost", value=fmt.usd(cost.sum()) + (f" ({sources})" if sources else "")),
        KeyValue(key="Generation time (sum)", value=fmt.seconds(latency.sum() if latency.notna().any() else None)),
    ]
    if data.wall_time_s is not None:
        items.append(KeyValue(key="Wall time", value=fmt.seconds(data.wall_time_s)))
    items.append(KeyValue(key="Scored", value=f"yes ({data.score_model})" if data.scored and data.score_model
                          else ("yes" if data.scored else "not yet")))
    if data.scorers:
        items.append(KeyValue(key="Scorers", value="; ".join(
            f"{s.label}: {s.model_id}" + (" (random weights)" if s.random_weights else "") for s in data.scorers)))
    if data.recommended_by:
        items.append(KeyValue(key="Recommended by", value=data.recommended_by))
    return items


def build_run_view(data: RunData, report_dir: Path | None = None, progress: bool = False) -> RunReportView:
    report_dir = report_dir or data.run_dir
    df = normalise(data.results)
    records = df.to_dict("records")
    for row in records:
        row["column_key"] = _column_key(row)
    df["column_key"] = [r["column_key"] for r in records]
    thumbs = ThumbIndex(report_dir, data.run_dir / "thumbs", progress=progress)
    for row in records:
        if row_ok(row):
            thumbs.want(image_file(data.run_dir, row), sha_of(row))
    input_files = _input_files(df, data.run_dir)
    mask_files = _input_files(df, data.run_dir, column="mask_path")
    for path in [*input_files.values(), *mask_files.values()]:
        thumbs.want(path, stored_sha(path))
    thumbs.make()
    inputs = {key: _input_figure(key, path, thumbs) for key, path in input_files.items()}

    variants = _ordered_unique(df["variant"])
    suite_prompts = [p.get("id") for p in data.suite.get("prompts", []) if isinstance(p, dict)]
    prompt_order = _ordered_unique([*suite_prompts, *df["prompt_id"]])
    present = set(df["lora"])
    suite_loras = [str(x) for x in data.suite.get("loras") or [] if isinstance(x, str)]
    lora_order = _ordered_unique([*[k for k in suite_loras if k in present],
                                  *[k for k in data.loras if k in present], *df["lora"]])
    lookup = _lookup(records)
    recs = {(r.lora, r.provider): r.scale for r in data.recommendations}
    loras = [lora for lora in lora_order if lora]
    columns = {lora: _columns(lora, df, data, recs) for lora in loras}
    grid, grids, run_grid = build_grid(
        list(lookup.values()), run_dir=data.run_dir, thumbs=thumbs, lora_order=loras, prompt_order=prompt_order,
        recs=recs, rec_strengths={(r.lora, r.provider): r.strength for r in data.recommendations},
        sections=[(lora, anchor, _marks(columns[lora])) for lora, anchor in _anchors(loras).items()],
        inputs=input_files, masks=mask_files)
    sections = [_section(lora, df, variants, data, recs, columns[lora], section, inputs)
                for lora, section in zip(loras, grids)]
    banners = [random_weight_banner(data)] if uses_random_weights(df) else []
    return RunReportView(
        title=f"lorascope report: {data.suite_name or data.run_dir.name}",
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        banners=banners,
        summary=_summary(data, df, records, variants),
        scored=data.scored,
        score_note="" if data.scored else (
            "This run is not scored yet: the grids show images, latency and cost only. "
            "Run `lorascope score RUN` (and `lorascope recommend RUN`), then `lorascope report RUN` again."),
        providers=variants,
        sections=sections,
        run_grid=run_grid,
        grid=grid,
        provider_stats=_provider_table(data, df),
        problems=_problems(records),
        agreement=agreement_rows(data.agreement),
        has_votes=bool(data.human),
    )
