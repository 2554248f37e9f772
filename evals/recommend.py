"""Scale recommendation: per LoRA and provider, the scale a run's evidence supports.

The rule (RULE below, also printed by `lorascope recommend` and in docs/evals.md):

1. Strength of the LoRA at a scale = mean style shift over the prompts and seeds at that
   scale; for an entry without a `style_prompt`, mean LoRA effect instead (how much the
   picture changed at all). Scales <= 0 are never recommended.
2. A scale is *faithful* when its mean CLIPScore stays within `clip_tolerance` (relative,
   default 5%) of the provider's no-LoRA baseline: the LoRA may restyle the picture but must
   not make it stop showing what the prompt asked for.
3. Among faithful scales, the recommendation is the smallest one reaching `target_fraction`
   (default 90%) of the largest mean strength: most of the effect, least risk of artefacts.
4. No recommendation when no scale is faithful, or when no faithful scale moves the picture
   toward the style at all (largest mean strength <= 0).

A recommendation outside the catalogue entry's `scale.range` is clamped into it with a
warning (the range is a human judgement; a run does not widen it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lorascope.evals.metrics import is_scorable, iter_loras
from lorascope.evals.stats import mean_ci

if TYPE_CHECKING:  # pragma: no cover
    from lorascope.registry.models import LoraEntry

DEFAULT_TARGET_FRACTION = 0.9
DEFAULT_CLIP_TOLERANCE = 0.05

RULE = (
    "smallest scale whose mean style shift (LoRA effect when the entry has no style_prompt) "
    "reaches {target:.0%} of the largest mean among scales whose mean CLIPScore stays within "
    "{tol:.0%} of the no-LoRA baseline; clamped into the catalogue range"
)


@dataclass
class ScalePoint:
    scale: float
    images: int
    strength: float
    strength_low: float
    strength_high: float
    clip_score: float
    clip_score_low: float
    clip_score_high: float
    faithful: bool


@dataclass
class Recommendation:
    lora: str
    provider: str
    basis: str  # "style_shift" | "lora_effect"
    scale: float | None
    catalogue_scale: float | None
    catalogue_range: tuple[float, float] | None
    baseline_clip_score: float
    points: list[ScalePoint] = field(default_factory=list)
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    measured_scale: float | None = None  # before clamping
    #: image-to-image runs sweeping denoising strengths: the strength these points and this
    #: scale were decided at (the pair rule's, evals.recommend_pairs); None elsewhere
    strength: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lora": self.lora,
            "provider": self.provider,
            "basis": self.basis,
            "scale": self.scale,
            "strength": self.strength,
            "measured_scale": self.measured_scale,
            "catalogue_scale": self.catalogue_scale,
            "catalogue_range": list(self.catalogue_range) if self.catalogue_range else None,
            "baseline_clip_score": _none_if_nan(self.baseline_clip_score),
            "reason": self.reason,
            "warnings": self.warnings,
            "points": [{k: _none_if_nan(v) for k, v in vars(p).items()} for p in self.points],
        }


def _none_if_nan(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def recommend_scales(
    scored: pd.DataFrame,
    entries: dict[str, "LoraEntry"],
    *,
    target_fraction: float = DEFAULT_TARGET_FRACTION,
    clip_tolerance: float = DEFAULT_CLIP_TOLERANCE,
) -> list[Recommendation]:
    """Apply the rule to a scored results frame (evals.results.scored_frame). A run sweeping
    denoising strengths is never pooled across them: each LoRA is decided at the strength the
    pair rule (evals.recommend_pairs) picks, against that strength's no-LoRA baseline."""
    if len(strengths_of(scored)) > 1:
        return _at_chosen_strengths(scored, entries, target_fraction=target_fraction, clip_tolerance=clip_tolerance)
    ok = scored[is_scorable(scored)]
    out: list[Recommendation] = []
    for provider in sorted(ok["provider"].unique()):
        prov = ok[ok["provider"] == provider]
        baseline = prov[prov["lora"] == ""]
        base_clip = mean_ci(pd.to_numeric(baseline["clip_score"], errors="coerce")).mean
        for lora in iter_loras(prov):
            entry = entries.get(lora)
            rows = prov[prov["lora"] == lora]
            basis = "style_shift" if entry is not None and entry.style_prompt else "lora_effect"
            rec = Recommendation(
                lora=lora,
                provider=provider,
                basis=basis,
                scale=None,
                catalogue_scale=entry.scale.recommended if entry else None,
                catalogue_range=tuple(entry.scale.range) if entry else None,  # type: ignore[arg-type]
                baseline_clip_score=base_clip,
            )
            for scale, group in sorted(rows.groupby("scale"), key=lambda kv: kv[0]):
                strength = mean_ci(pd.to_numeric(group[basis], errors="coerce"))
                clip = mean_ci(pd.to_numeric(group["clip_score"], errors="coerce"))
                faithful = (
                    not math.isnan(base_clip)
                    and not math.isnan(clip.mean)
                    and clip.mean >= base_clip * (1.0 - clip_tolerance)
                )
                rec.points.append(
                    ScalePoint(float(scale), len(group), strength.mean, strength.low, strength.high,
                               clip.mean, clip.low, clip.high, faithful)
                )
            _decide(rec, entry, target_fraction, clip_tolerance)
            out.append(rec)
    return out


def strengths_of(frame: pd.DataFrame) -> list[float]:
    """The denoising strengths a frame's rows were generated at, sorted (empty: text-to-image)."""
    if "strength" not in frame.columns:
        return []
    return sorted(set(pd.to_numeric(frame["strength"], errors="coerce").dropna()))


def _at_chosen_strengths(
    scored: pd.DataFrame, entries: dict[str, "LoraEntry"], *, target_fraction: float, clip_tolerance: float,
) -> list[Recommendation]:
    """Each (LoRA, provider) decided at its pair's strength; where no strength gave a scale,
    the lowest strength's figures with the pair rule's reason."""
    from lorascope.evals.recommend_pairs import recommend_pairs

    strength_col = pd.to_numeric(scored["strength"], errors="coerce")
    per_strength = {
        value: {(r.lora, r.provider): r for r in recommend_scales(
            scored[strength_col == value], entries, target_fraction=target_fraction, clip_tolerance=clip_tolerance)}
        for value in strengths_of(scored)
    }
    lowest = min(per_strength)
    pairs = {(p.lora, p.provider): p for p in recommend_pairs(
        scored, entries, target_fraction=target_fraction, clip_tolerance=clip_tolerance, rows_by_strength=per_strength)}
    keys = sorted({key for recs in per_strength.values() for key in recs}, key=lambda k: (k[1], k[0]))
    out = []
    for key in keys:
        pair = pairs.get(key)
        if pair is not None and pair.strength is not None and key in per_strength[pair.strength]:
            rec = per_strength[pair.strength][key]
            rec.strength = pair.strength
            rec.reason = f"at strength {pair.strength:g} (the pair rule: {pair.reason}): {rec.reason}"
        else:
            at = next((value for value in sorted(per_strength) if key in per_strength[value]), lowest)
            rec = per_strength[at][key]
            rec.strength, rec.scale, rec.measured_scale = at, None, None
            rec.reason = (f"no (scale, strength) pair: {pair.reason if pair else 'no strength was scored'}; "
                          f"the figures shown are strength {at:g}'s")
        out.append(rec)
    return out


def _decide(rec: Recommendation, entry: "LoraEntry | None", target_fraction: float, clip_tolerance: float) -> None:
    candidates = [p for p in rec.points if p.scale > 0 and not math.isnan(p.strength)]
    if math.isnan(rec.baseline_clip_score):
        rec.reason = "no scored no-LoRA baseline for this provider: CLIPScore cannot be compared"
        return
    if not candidates:
        rec.reason = f"no scored scale > 0 with a {rec.basis.replace('_', ' ')}"
        return
    faithful = [p for p in candidates if p.faithful]
    if not faithful:
        rec.reason = (
            f"every scale drops mean CLIPScore more than {clip_tolerance:.0%} below the baseline "
            f"({rec.baseline_clip_score:.3f})"
        )
        return
    best = max(p.strength for p in faithful)
    if best <= 0:
        rec.reason = f"no faithful scale moves the picture toward the style (largest mean {rec.basis} {best:+.4f})"
        return
    chosen = min((p for p in faithful if p.strength >= target_fraction * best), key=lambda p: p.scale)
    rec.measured_scale = chosen.scale
    rec.scale = chosen.scale
    rec.reason = (
        f"{rec.basis} {chosen.strength:+.4f} >= {target_fraction:.0%} of best {best:+.4f}; "
        f"CLIPScore {chosen.clip_score:.3f} vs baseline {rec.baseline_clip_score:.3f}"
    )
    clamp_to_catalogue(rec, entry, advice=" (widen the range by hand if the evidence is convincing)")


def clamp_to_catalogue(rec: Recommendation, entry: "LoraEntry | None", *, what: str = "measured",
                       advice: str = "") -> None:
    """Clamp `rec.scale` into the catalogue entry's `scale.range` with a warning that says so:
    the range is a human judgement, a run does not widen it (every rule: default, objective,
    human votes)."""
    if entry is None or rec.scale is None:
        return
    lo, hi = entry.scale.range
    if not lo <= rec.scale <= hi:
        measured = rec.scale
        rec.scale = min(max(measured, lo), hi)
        rec.warnings.append(f"{rec.lora}: {what} scale {measured:g} is outside the catalogue range [{lo:g}, {hi:g}]; "
                            f"clamped to {rec.scale:g}{advice}")


class CatalogueWriteError(RuntimeError):
    pass


class RandomWeightScores(CatalogueWriteError):
    """The scores come from a random-weight scorer: a scale chosen from them means nothing."""


def random_weight_scores(model: str | None) -> bool:
    """Whether a scorer's model id or label names random weights: `tiny-random` (and its id
    `tiny-random-clip-v1`) or a full-size architecture with seeded random weights
    (`ARCH:random`, id `open_clip:ARCH:random-seedN`)."""
    text = str(model or "").lower()
    return "tiny-random" in text or text.endswith(":random") or ":random-seed" in text


def write_recommendations(
    catalogue_path: Path,
    recommendations: list[Recommendation],
    *,
    run_dir: Path,
    clip_label: str,
    today: str | None = None,
    force: bool = False,
) -> list[str]:
    """Set `scale.recommended` and `provenance.scale` of each recommended entry in
    `catalogue_path`, in place, keeping comments, order and formatting (ruamel round-trip).

    One recommendation per LoRA (the caller picks the provider). The edited file is
    validated with the registry before it replaces the original. Returns the ids written.
    Scores from a random-weight scorer are refused (`RandomWeightScores`) unless `force`:
    the catalogue is what people pick scales from."""
    if random_weight_scores(clip_label) and not force:
        raise RandomWeightScores(
            f"{run_dir} was scored with {clip_label}, a random-weight CLIP: its numbers carry no meaning, so "
            f"{catalogue_path} was not changed. Score the run with real weights (`lorascope score {run_dir} "
            "--clip ViT-B-32:openai`) and recommend again, or pass --force to write these scales anyway"
        )
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from lorascope.registry.catalogue import load_catalogue
    from lorascope.registry.problems import CatalogueError

    today = today or datetime.now(timezone.utc).date().isoformat()
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    text = catalogue_path.read_text(encoding="utf-8")
    offset = _item_offset(text)
    yaml.indent(mapping=2, sequence=offset + 2, offset=offset)
    doc = yaml.load(text)
    items = doc.get("loras") if isinstance(doc, dict) else doc
    schema = doc.get("version", 1) if isinstance(doc, dict) else 1
    by_id = {str(item.get("id")): item for item in (items or []) if isinstance(item, dict)}
    written: list[str] = []
    for rec in recommendations:
        if rec.scale is None:
            continue
        item = by_id.get(rec.lora)
        if item is None:
            raise CatalogueWriteError(f"{catalogue_path}: no entry {rec.lora!r} to write the recommendation into")
        value = round(float(rec.scale), 3)
        item["scale"]["recommended"] = value
        provenance = item.get("provenance")
        if provenance is None:
            provenance = CommentedMap()
            item["provenance"] = provenance
        evidence = CommentedMap()
        if schema >= 2:  # the catalogue's own schema: `state` (version 2) or `confirmed` (version 1)
            evidence["state"] = "unverified"  # measured here, not read from the LoRA's own repo
        evidence["source"] = f"lorascope recommend: run {run_dir} ({today}, provider {rec.provider}, CLIP {clip_label})"
        if schema < 2:
            evidence["confirmed"] = False
        note = f"measured by rule: {rec.reason}"
        if rec.measured_scale is not None and rec.measured_scale != rec.scale:
            note += f"; measured {rec.measured_scale:g}, clamped into the range"
        evidence["note"] = note
        evidence.fa.set_flow_style()
        provenance["scale"] = evidence
        written.append(rec.lora)
    if not written:
        return written
    tmp = catalogue_path.with_name(f".{catalogue_path.name}.lorascope-tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            yaml.dump(doc, fh)
        try:
            load_catalogue(tmp)
        except CatalogueError as exc:
            raise CatalogueWriteError(f"refusing to write {catalogue_path}: the edit would make it invalid:\n{exc}") from exc
        tmp.replace(catalogue_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return written


def _item_offset(text: str) -> int:
    """Column of the `-` of the first list item (0 or 2 in practice), so the rewritten file
    keeps the layout it had (mappings indented by 2, as `lorascope registry add` writes)."""
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if stripped.startswith("- ") and not line.lstrip().startswith("#"):
            return len(line) - len(stripped)
    return 2
