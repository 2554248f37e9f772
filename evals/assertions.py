"""Assertion helpers for eval tests: each failure names the LoRA, scale, provider, prompt and
seed, shows the numbers, and gives the image paths, so a red test says what to look at.

Helpers set `__tracebackhide__` (as pytest's own helpers do): a failure shows the test's line
and the message, not this module's frames or their locals. A comparison failure stays short:
one counts line, the worst few cells, then the run folder and the command that renders every
cell side by side."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from lorascope.evals.compare import CellComparison, CompareReport
    from lorascope.evals.session import ScoredRun


class EvalAssertionError(AssertionError):
    pass


def _fail(headline: str, lines: Iterable[str]) -> None:
    __tracebackhide__ = True
    lines = list(lines)
    shown = lines[:25]
    more = f"\n  ... and {len(lines) - len(shown)} more" if len(lines) > len(shown) else ""
    raise EvalAssertionError(headline + "\n  " + "\n  ".join(shown) + more)


#: cells a comparison failure lists; the rest are in compare.json and the HTML report
WORST_SHOWN = 5


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
    __tracebackhide__ = True
    scale, rows = _rows_at(scored, lora, scale, provider)
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
    __tracebackhide__ = True
    scale, rows = _rows_at(scored, lora, scale, provider)
    base = scored.baseline_rows(provider)
    if base.empty:
        raise EvalAssertionError(f"no no-LoRA baseline images{' on ' + provider if provider else ''} in "
                                 f"{scored.run_dir}: add the suite's baseline (scale 0 / no LoRA) cells")
    lora_mean, base_mean = _mean(rows["clip_score"]), _mean(base["clip_score"])
    if math.isnan(lora_mean) or math.isnan(base_mean) or lora_mean < base_mean * (1 - tolerance):
        _fail(
            f"{lora} @ {scale:g}: mean CLIPScore {lora_mean:.4f} vs no-LoRA baseline {base_mean:.4f} "
            f"(allowed drop {tolerance:.0%})",
            (f"CLIPScore {r['clip_score']:.4f}: {scored.describe(r)}" for _, r in rows.iterrows()),
        )
    return lora_mean, base_mean


def _rows_at(scored: "ScoredRun", lora: str, scale: float | None, provider: str | None):
    """(scale, rows) of `lora` at `scale` (default: the catalogue's recommendation); an
    unknown LoRA, provider or a scale the grid lacks is named, with what the run does have."""
    __tracebackhide__ = True
    frame = scored.frame
    loras = sorted(x for x in frame["lora"].dropna().unique() if x)
    if lora not in loras:
        raise EvalAssertionError(f"LoRA {lora!r} is not in {scored.run_dir} (its LoRAs: {', '.join(loras) or 'none'})")
    if provider is not None and provider not in set(frame["provider"]):
        raise EvalAssertionError(f"provider {provider!r} is not in {scored.run_dir} "
                                 f"(its providers: {', '.join(sorted(set(frame['provider'])))})")
    where = "the catalogue's recommended scale " if scale is None else "scale "
    if scale is None:
        if lora not in scored.entries:
            raise EvalAssertionError(f"LoRA {lora!r} has no catalogue entry in {scored.run_dir}: pass scale=")
        scale = scored.recommended_scale(lora)
    rows = scored.select(lora=lora, scale=scale, provider=provider)
    if rows.empty:
        have = sorted({float(s) for s in scored.select(lora=lora, provider=provider)["scale"].dropna()})
        raise EvalAssertionError(
            f"{lora}: {where}{scale:g} is not in the grid of {scored.run_dir}"
            f"{' on ' + provider if provider else ''} (its scales: {', '.join(f'{s:g}' for s in have) or 'none'}); "
            "add it to the suite's scales or pass scale="
        )
    return scale, rows


def _short_line(c: "CellComparison") -> str:
    """One changed cell in a line: verdict, provider, LoRA@scale, prompt, seed, what failed."""
    what = f"{c.lora}@{c.scales}" if c.lora else "no-LoRA"
    seed = "random" if c.seed in ("", None) else c.seed
    why = "; ".join(c.reasons) or c.verdict
    return f"{c.verdict:<9} {c.provider} {what} prompt={c.prompt_id} seed={seed}: {why}"


def failure_text(report: "CompareReport") -> str:
    """The short, readable comparison failure (< 30 lines): the counts (overall and per
    provider), the worst cells, notes, then where to look and the command that shows every
    cell side by side."""
    from lorascope.evals.compare import worst_first

    per_provider = "; ".join(
        f"{p}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        for p, counts in report.provider_counts().items()
    )
    lines = [f"{report.headline()}" + (f" ({per_provider})" if per_provider else "")]
    notes = list(report.notes)
    if report.cache_only and not report.allow_cached and notes:
        lines.append(notes.pop(0))
    changed = [c for c in worst_first(report.cells) if c.verdict != "same"]
    if changed:
        lines.append(f"worst cells ({min(len(changed), WORST_SHOWN)} of {len(changed)} changed):")
        lines += [f"  {_short_line(c)}" for c in changed[:WORST_SHOWN]]
    lines += [f"note: {n}" for n in notes[:3]]
    lines.append(f"run:      {report.run}")
    lines.append(f"baseline: {report.baseline}")
    lines.append(f"every cell in {report.run}/compare.json; side by side: "
                 f"lorascope report {report.run} --compare {report.baseline}")
    return "\n".join(lines)


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
    """No cell regressed (drift is allowed), no provider slowed past the latency tolerance,
    and the run was not served entirely from the cache (unless that was allowed). The
    failure is short: counts, the worst cells, and the `lorascope report --compare` command."""
    __tracebackhide__ = True
    if report.failed or any(c.verdict == "regressed" for c in report.cells):
        raise EvalAssertionError(failure_text(report))


def assert_matches_exactly(report: "CompareReport") -> None:
    """Every baseline cell is in the run with byte-identical images (deterministic providers)."""
    __tracebackhide__ = True
    bad = [c for c in report.cells if not (c.verdict == "same" and (c.exact or c.baseline_image is None))]
    if bad:
        _fail(f"{report.run} does not match {report.baseline} exactly ({report.counts})", [_cell_line(c) for c in bad])


def assert_drift_detected(report: "CompareReport", *, lora: str | None = None) -> list["CellComparison"]:
    """At least one cell (of `lora`, when given) drifted or regressed; returns those cells."""
    __tracebackhide__ = True
    changed = [c for c in report.cells if c.verdict in ("drifted", "regressed") and (lora is None or c.lora == lora)]
    if not changed:
        _fail(f"expected {report.run} to drift from {report.baseline}{' for ' + lora if lora else ''}, "
              f"but every cell is unchanged ({report.counts})", [_cell_line(c) for c in report.cells[:5]])
    return changed
