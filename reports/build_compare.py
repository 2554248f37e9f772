"""Build the comparison report's view model: drifted cells first, each with the baseline
and current image side by side and the numbers evals used to decide."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from lorascope.reports import fmt
from lorascope.reports.figures import ThumbIndex, asset_url
from lorascope.reports.howto import random_weight_banner
from lorascope.reports.inputs import CHANGED_VERDICTS, CompareCellData, CompareData, CompareSide
from lorascope.reports.thumbs import ThumbFailure
from lorascope.reports.viewmodels import (
    CompareCell,
    CompareItem,
    CompareMetric,
    ComparePairs,
    CompareReportView,
    Figure,
    KeyValue,
)

METRIC_FORMATS = {
    "latency_s": fmt.seconds,
    "cost_usd": fmt.usd,
}


METRIC_NAMES = {
    "clip_score": "CLIPScore", "style_shift": "style shift", "lora_effect": "LoRA effect",
    "latency_s": "latency", "cost_usd": "cost per image",
    "image_cosine": "image cosine to baseline", "ssim": "SSIM to baseline",
}


def _value(name: str, value: float | None) -> str:
    return METRIC_FORMATS.get(name, lambda v: fmt.num(v, ".4f"))(value)


def _delta(name: str, value: float | None) -> str:
    if fmt.is_missing(value):
        return fmt.DASH
    if name in METRIC_FORMATS:
        sign = "+" if value >= 0 else "−"
        return sign + METRIC_FORMATS[name](abs(value))
    return fmt.signed(value, "+.4f")


def _figure(side: CompareSide, which: str, cell: CompareCellData, thumbs: ThumbIndex) -> Figure:
    label = f"{which}: {cell.where}"
    caption = [c for c in (fmt.seconds(side.latency_s) if side.latency_s is not None else "",
                           fmt.usd(side.cost_usd) if side.cost_usd is not None else "") if c]
    if side.image is None:
        reason = side.error or (f"status: {side.status}" if side.status else "no image")
        return Figure(provider=which, status="failed", reason=reason, alt=label, title=label)
    thumb = thumbs.get(side.image)
    if isinstance(thumb, ThumbFailure):
        return Figure(provider=which, status="missing", reason=thumb.reason, alt=label, title=label)
    return Figure(provider=which, status="ok", thumb=asset_url(thumb.path, thumbs.report_dir),
                  full=asset_url(side.image, thumbs.report_dir), thumb_width=thumb.width,
                  thumb_height=thumb.height, alt=label, title=label, caption=caption, sha=side.sha256 or "")


def _sort_key(cell: CompareCellData) -> tuple:
    """Changed cells first, the worst verdict first; then grid order."""
    return (not cell.drifted, CHANGED_VERDICTS.get(cell.verdict, 9), cell.provider, cell.lora, cell.scale,
            cell.prompt_id, cell.seed)


def verdict_counts(cells: list[CompareCellData]) -> dict[str, int]:
    """Changed verdicts worst first (every one, zeros included), then `same`."""
    order = [*sorted(CHANGED_VERDICTS, key=CHANGED_VERDICTS.get), "same"]
    return {v: sum(1 for c in cells if c.verdict == v) for v in order}


def provider_counts(cells: list[CompareCellData]) -> dict[str, str]:
    """Per provider, its non-zero verdict counts, worst first: '2 regressed, 1 drifted, 9 same'."""
    out: dict[str, str] = {}
    for provider in sorted({c.provider for c in cells}):
        counts = verdict_counts([c for c in cells if c.provider == provider])
        out[provider] = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    return out


def _label(path: Path) -> str:
    """A folder's name, with its parent's when names repeat (runs/x/run vs runs/y/run)."""
    return "/".join(path.resolve().parts[-2:]) if path.name in ("run", "") else path.name


def build_compare_view(data: CompareData, report_dir: Path | None = None, progress: bool = False) -> CompareReportView:
    report_dir = report_dir or data.run_dir
    thumbs = ThumbIndex(report_dir, data.run_dir / "thumbs", progress=progress)
    for cell in data.cells:
        for side in (cell.baseline, cell.current):
            if side.image is not None:
                thumbs.want(side.image, side.sha256)
    thumbs.make()
    cells = []
    pairs: list[list[CompareItem]] = []
    for cell in sorted(data.cells, key=_sort_key):
        pair = _pair(cell, report_dir)
        if pair:
            pairs.append(pair)
        cells.append(CompareCell(
            pair=len(pairs) - 1 if pair else None,
            verdict=cell.verdict, drifted=cell.drifted, provider=cell.provider, lora=cell.lora or "no LoRA",
            scale=cell.scale, prompt_id=cell.prompt_id, prompt=cell.prompt, seed=cell.seed, inputs=cell.inputs,
            reasons=cell.reasons,
            baseline=_figure(cell.baseline, "baseline", cell, thumbs),
            current=_figure(cell.current, "current", cell, thumbs),
            metrics=[CompareMetric(name=METRIC_NAMES.get(m.name, m.name), baseline=_value(m.name, m.baseline),
                                   current=_value(m.name, m.current), delta=_delta(m.name, m.delta))
                     for m in cell.metrics],
        ))
    summary = [
        KeyValue(key="Baseline", value=str(data.baseline_dir)),
        KeyValue(key="Current run", value=str(data.run_dir)),
        KeyValue(key="Verdict", value=data.overall),
        KeyValue(key="Cells compared", value=str(len(data.cells))),
        # each verdict on its own: a regression must not hide among drifts
        *[KeyValue(key=verdict.capitalize(), value=str(n)) for verdict, n in verdict_counts(data.cells).items()],
        *[KeyValue(key=f"Provider {p}", value=text) for p, text in provider_counts(data.cells).items()],
        *[KeyValue(key=str(k), value=str(v)) for k, v in data.settings.items() if k != "Verdicts"],
    ]
    return CompareReportView(
        title=f"lorascope comparison: {_label(data.run_dir)} vs baseline {_label(data.baseline_dir)}",
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=summary,
        drifted=[c for c in cells if c.drifted], unchanged=[c for c in cells if not c.drifted],
        banners=[random_weight_banner(data, howto=False)] if data.random_weights else [],
        pairs=ComparePairs(pairs=pairs),
    )


def _pair(cell: CompareCellData, report_dir: Path) -> list[CompareItem] | None:
    """Baseline and current, large, for the compare view's slider and blink (both must exist)."""
    if cell.baseline.image is None or cell.current.image is None:
        return None
    where = cell.where
    items = []
    for which, side in (("baseline", cell.baseline), ("current", cell.current)):
        facts = [f"{METRIC_NAMES.get(m.name, m.name)} {_value(m.name, m.baseline if which == 'baseline' else m.current)}"
                 for m in cell.metrics if m.name not in ("image_cosine", "ssim")]
        if side.latency_s is not None and not any(m.name == "latency_s" for m in cell.metrics):
            facts.append(f"latency {fmt.seconds(side.latency_s)}")
        if side.cost_usd is not None and not any(m.name == "cost_usd" for m in cell.metrics):
            facts.append(f"cost {fmt.usd(side.cost_usd)}")
        items.append(CompareItem(full=asset_url(side.image, report_dir), label=f"{which}: {where}",
                                 sha=side.sha256 or "", facts=facts))
    return items
