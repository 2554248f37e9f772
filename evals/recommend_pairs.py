"""A (scale, strength) pair per LoRA and provider for image-to-image runs.

Why its own rule: with an input picture the choice is two-dimensional, and a higher denoising
strength buys style by giving up the picture. So: at each strength, the scale rule of
evals.recommend against *that strength's* no-LoRA baseline (CLIPScore kept, smallest scale
reaching most of the style); then, among those per-strength choices, the lowest strength whose
style shift reaches `target_fraction` of the best one's — the least of the input given up for
most of the style. Fidelity to the input (evals.fidelity) is reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lorascope.evals.fidelity import fidelity_by_strength, has_inputs
import pandas as pd

from lorascope.evals.recommend import (
    DEFAULT_CLIP_TOLERANCE,
    DEFAULT_TARGET_FRACTION,
    Recommendation,
    recommend_scales,
    strengths_of,
)

if TYPE_CHECKING:  # pragma: no cover

    from lorascope.registry.models import LoraEntry

PAIR_RULE = (
    "at each strength, the scale rule against that strength's no-LoRA baseline; then the lowest strength "
    "whose chosen scale's mean style shift reaches {target:.0%} of the best of them (a lower strength keeps "
    "more of the input)"
)


@dataclass
class StrengthChoice:
    strength: float
    scale: float | None
    effect: float  # mean style shift (or LoRA effect) at that scale
    input_ssim: float
    input_cosine: float
    reason: str


@dataclass
class PairRecommendation:
    lora: str
    provider: str
    scale: float | None
    strength: float | None
    reason: str
    choices: list[StrengthChoice] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {"lora": self.lora, "provider": self.provider, "scale": self.scale, "strength": self.strength,
                "reason": self.reason, "per_strength": [{k: clean(v) for k, v in vars(c).items()} for c in self.choices]}


def recommend_pairs(
    scored: "pd.DataFrame",
    entries: dict[str, "LoraEntry"],
    *,
    target_fraction: float = DEFAULT_TARGET_FRACTION,
    clip_tolerance: float = DEFAULT_CLIP_TOLERANCE,
    rows_by_strength: "dict[float, dict[tuple[str, str], Recommendation]] | None" = None,
) -> list[PairRecommendation]:
    """Apply the pair rule to a scored frame with the fidelity columns (evals.fidelity); empty
    for a run without a strength axis. `rows_by_strength`: the scale rule's decisions per
    strength when the caller already has them (evals.recommend does)."""
    if not has_inputs(scored) or "strength" not in scored.columns or scored["strength"].isna().all():
        return []
    points = fidelity_by_strength(scored).set_index(["lora", "provider", "strength", "scale"])
    found: dict[tuple[str, str], PairRecommendation] = {}
    for strength in strengths_of(scored):
        if rows_by_strength is not None:
            decided = list(rows_by_strength[strength].values())
        else:
            at = scored[pd.to_numeric(scored["strength"], errors="coerce") == strength]
            decided = recommend_scales(at, entries, target_fraction=target_fraction, clip_tolerance=clip_tolerance)
        for rec in decided:
            pair = found.setdefault((rec.lora, rec.provider), PairRecommendation(rec.lora, rec.provider, None, None, ""))
            point = next((p for p in rec.points if rec.measured_scale is not None and p.scale == rec.measured_scale), None)
            ssim = cosine = math.nan
            key = (rec.lora, rec.provider, float(strength), rec.measured_scale)
            if point is not None and key in points.index:
                ssim, cosine = float(points.loc[key, "input_ssim"]), float(points.loc[key, "input_cosine"])
            pair.choices.append(StrengthChoice(float(strength), rec.scale, point.strength if point else math.nan,
                                               ssim, cosine, rec.reason))
    for pair in found.values():
        usable = [c for c in pair.choices if c.scale is not None and not math.isnan(c.effect) and c.effect > 0]
        if not usable:
            pair.reason = "no strength has a recommended scale (see the per-strength reasons)"
            continue
        best = max(c.effect for c in usable)
        chosen = min((c for c in usable if c.effect >= target_fraction * best), key=lambda c: (c.strength, c.scale))
        pair.scale, pair.strength = chosen.scale, chosen.strength
        fidelity = "" if math.isnan(chosen.input_ssim) else (
            f"; keeps SSIM {chosen.input_ssim:.3f} / CLIP cosine {chosen.input_cosine:.3f} to the input")
        pair.reason = (f"lowest strength whose style {chosen.effect:+.4f} >= {target_fraction:.0%} of the best "
                       f"{best:+.4f}{fidelity}")
    return list(found.values())
