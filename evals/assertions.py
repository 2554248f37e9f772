"""Assertion helpers for eval tests: each failure names the LoRA, scale, provider, prompt and
seed, shows the numbers, and gives the image paths, so a red test says what to look at."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from lorascope.evals.compare import CellComparison, CompareReport
    from lorascope.evals.session import ScoredRun


class EvalAssertionError(AssertionError):
    pass


def _fail(headline: str, lines: Iterable[str]) -> None:
    lines = list(lines)
    shown = lines[:25]
    more = f"\n  ... and {len(lines) - len(shown)} more" if len(lines) > len(shown) else ""
    raise EvalAssertionError(headline + "\n  " + "\n  ".join(shown) + more)


def _mean(values: Iterable[float]) -> float:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


def assert_style_shift_up(
    scored: "ScoredRun",
    lora: str,
    *,
    scale: float | None = None,
    provider: str | None = None,
    min_mean: float = 0.0,
) -> float:
    """Mean style shift of `lora` at `scale` (default: its catalogue recommendation) is above
    `min_mean`; returns the mean. On failure lists every image with its own shift."""
    scale = scored.recommended_scale(lora) if scale is None else scale
    rows = scored.select(lora=lora, scale=scale, provider=provider)
    if rows.empty:
        raise EvalAssertionError(f"no images of {lora} @ {scale:g}{' on ' + provider if provider else ''} in {scored.run_dir}")
    mean = _mean(rows["style_shift"])
    if not mean > min_mean:
        _fail(
            f"{lora} @ {scale:g}: mean style shift {mean:+.4f} is not above {min_mean:+.4f} "
            f"(style prompt: {scored.entries[lora].style_prompt!r})",
            (f"style shift {r['style_shift']:+.4f}: {scored.describe(r)}" for _, r in rows.iterrows()),
        )
    return mean


def assert_clip_score_near_baseline(
    scored: "ScoredRun",
    lora: str,
    *,
    scale: float | None = None,
    provider: str | None = None,
    tolerance: float = 0.05,
) -> tuple[float, float]:
    """Mean CLIPScore of `lora` at `scale` is at least (1 - tolerance) x the no-LoRA
    baseline's on the same provider(s); returns (lora mean, baseline mean)."""
    scale = scored.recommended_scale(lora) if scale is None else scale
    rows = scored.select(lora=lora, scale=scale, provider=provider)
    base = scored.baseline_rows(provider)
    lora_mean, base_mean = _mean(rows["clip_score"]), _mean(base["clip_score"])
    if math.isnan(lora_mean) or math.isnan(base_mean) or lora_mean < base_mean * (1 - tolerance):
        _fail(
            f"{lora} @ {scale:g}: mean CLIPScore {lora_mean:.4f} vs no-LoRA baseline {base_mean:.4f} "
            f"(allowed drop {tolerance:.0%})",
            (f"CLIPScore {r['clip_score']:.4f}: {scored.describe(r)}" for _, r in rows.iterrows()),
        )
    return lora_mean, base_mean


def _cell_line(c: "CellComparison") -> str:
    nums = []
    if c.image_cosine is not None:
        nums.append(f"cos {c.image_cosine:.4f}")
    if c.ssim is not None:
        nums.append(f"SSIM {c.ssim:.4f}")
    if c.clip_score_delta is not None:
        nums.append(f"ΔCLIPScore {c.clip_score_delta:+.4f}")
    images = " | ".join(p for p in (c.baseline_image, c.run_image) if p)
    return f"{c.verdict}: {c.label()}: {'; '.join(c.reasons)} [{', '.join(nums)}] {images}"


def assert_no_regression(report: "CompareReport") -> None:
    """No cell regressed (drift is allowed)."""
    bad = [c for c in report.cells if c.verdict == "regressed"]
    if bad or report.regressed:
        _fail(f"{report.run} regressed against {report.baseline} ({report.counts})",
              [_cell_line(c) for c in bad] + report.notes)


def assert_matches_exactly(report: "CompareReport") -> None:
    """Every baseline cell is in the run with byte-identical images (deterministic providers)."""
    bad = [c for c in report.cells if not (c.verdict == "same" and (c.exact or c.baseline_image is None))]
    if bad:
        _fail(f"{report.run} does not match {report.baseline} exactly ({report.counts})", [_cell_line(c) for c in bad])


def assert_drift_detected(report: "CompareReport", *, lora: str | None = None) -> list["CellComparison"]:
    """At least one cell (of `lora`, when given) drifted or regressed; returns those cells."""
    changed = [c for c in report.cells if c.verdict in ("drifted", "regressed") and (lora is None or c.lora == lora)]
    if not changed:
        _fail(f"expected {report.run} to drift from {report.baseline}{' for ' + lora if lora else ''}, "
              f"but every cell is unchanged ({report.counts})", [_cell_line(c) for c in report.cells[:5]])
    return changed
