"""Metrics on a run's results frame: per image, per provider, and per (LoRA, scale, provider).

Per image (embeddings are L2-normalised, so a dot product is the cosine):

- `clip_cosine` = cos(image, prompt) with the prompt WITHOUT trigger words (triggers are
  nonsense tokens to CLIP), `clip_score` = 2.5 * max(clip_cosine, 0) (Hessel et al. 2021).
- `style_cosine` = cos(image, style prompt of the row's LoRA); for a stack, the members'
  style prompts joined with ", ".
- `style_shift` = style_cosine - cos(baseline image, same style prompt), where the baseline
  is the no-LoRA image of the same provider, prompt, seed, provider options (and image index
  when a request asks for several images): how much the
  LoRA moved the picture toward its advertised style, with the prompt's own pull taken out.
- `lora_effect` = 1 - cos(image, baseline image): how much the LoRA changed the picture at all.
- `agreement` = mean cos(image, image of each other provider for the same cell — same
  LoRA(s), scales, prompt and seed); NaN with one provider.

An unseeded generation (suite seed `null`) shares its seed with no other image: it gets
CLIPScore and style cosine, but no style shift, LoRA effect or agreement (measuring against a
picture from another random seed would report the seed's effect as the LoRA's).

Baseline rows get lora_effect 0 and no style shift (they have no style prompt of their own).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from lorascope.evals.results import SCORE_VALUE_COLUMNS
from lorascope.evals.stats import mean_ci

CLIPSCORE_WEIGHT = 2.5
SCORE_COLUMNS = SCORE_VALUE_COLUMNS  # one list: what is computed here is what run.db stores
AGGREGATE_METRICS = ("clip_score", "clip_cosine", "style_shift", "lora_effect", "agreement")
#: The store's generation statuses (harness.store.STATUSES): a row has an image when succeeded.
FAILED_STATUSES = frozenset({"failed"})


def clip_score_from_cosine(cos: float | np.ndarray) -> float | np.ndarray:
    """CLIPScore = w * max(cos, 0) with w = 2.5 (Hessel et al. 2021)."""
    return CLIPSCORE_WEIGHT * np.maximum(cos, 0.0)


def finite(value: Any) -> float | None:
    """A stored number as a float; None for missing, NaN or not a number (JSON and SQLite
    have no NaN)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def hashable(value: Any) -> Any:
    """Frame cells used as keys: lists/dicts (scales, options) become canonical strings."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""  # None, NaN and pandas' NA (a nullable Int64 seed column) are one "missing"
    return value


def scale_key(row: Mapping[str, Any]) -> str:
    """One label for the scale(s) of a row: '0.8' for one LoRA, '0.8+0.5' for a stack
    (the store's `scales` column), '' for the baseline."""
    if not row.get("lora"):
        return ""
    scales = row.get("scales")
    if isinstance(scales, str) and scales.strip():
        parts = scales.split("+")
        try:
            return "+".join(f"{float(p):g}" for p in parts)
        except ValueError:
            return scales
    scale = row.get("scale")
    if scale is None or (isinstance(scale, float) and math.isnan(scale)):
        return ""
    return f"{float(scale):g}"


def is_scorable(frame: pd.DataFrame) -> pd.Series:
    """Rows with a stored image (a failed or pending generation has none)."""
    sha = frame.get("image_sha256")
    path = frame.get("image_path")
    if sha is None or path is None:
        return pd.Series(False, index=frame.index)
    has = sha.notna() & (sha.astype(str) != "") & path.notna() & (path.astype(str) != "")
    if "status" in frame:
        has &= ~frame["status"].astype(str).str.lower().isin(FAILED_STATUSES)
    return has


def style_prompt_for(lora: str, style_prompts: Mapping[str, str | None]) -> str | None:
    """The style prompt scoring uses for a row's LoRA(s) ('+'-joined ids for a stack)."""
    if not lora:
        return None
    parts = [style_prompts.get(i) for i in str(lora).split("+")]
    parts = [p.strip() for p in parts if p and p.strip()]
    return ", ".join(parts) if parts else None


def is_unseeded(row: Mapping[str, Any]) -> bool:
    """A provider-random generation: no other image shares its seed (suite seed `null`)."""
    return hashable(row.get("seed")) == ""


#: Image-conditioned rows' own axes (harness.store): the denoising strength and the input
#: picture's id. A LoRA image is measured against the no-LoRA image of the same input at the
#: same strength, never another's (the strength alone moves the picture).
INPUT_AXES = ("strength", "init_image")


def input_key(row: Mapping[str, Any]) -> tuple:
    """(strength, input id) of an image-conditioned row; () for text-to-image, so text-to-image
    keys stay what they were."""
    values = tuple(hashable(row.get(column)) for column in INPUT_AXES)
    return values if any(v != "" for v in values) else ()


def _baseline_key(row: Mapping[str, Any]) -> tuple | None:
    """The no-LoRA image a row is measured against; None for an unseeded row, which has no
    same-seed baseline (another random seed would be measured as the LoRA's effect)."""
    if is_unseeded(row):
        return None
    # image k of a multi-image request is compared with image k of its baseline request
    return (row["provider"], row["prompt_id"], hashable(row["seed"]), hashable(row.get("options")),
            int(row.get("image_index") or 0), *input_key(row))


def _cell_key(row: Mapping[str, Any]) -> tuple | None:
    """The same cell on every provider; None for an unseeded row (each provider drew its own seed)."""
    if is_unseeded(row):
        return None
    return (row["lora"], scale_key(row), row["prompt_id"], hashable(row["seed"]), *input_key(row))


class _Writer:
    """`w[idx, column] = value` into per-column arrays by row position."""

    def __init__(self, columns: dict[str, np.ndarray], position: dict) -> None:
        self._columns, self._position = columns, position

    def __setitem__(self, key: tuple, value: float) -> None:
        idx, column = key
        self._columns[column][self._position[idx]] = value


def image_metrics(
    frame: pd.DataFrame,
    image_vectors: Mapping[str, np.ndarray],
    text_vectors: Mapping[str, np.ndarray],
    style_prompts: Mapping[str, str | None],
) -> pd.DataFrame:
    """The per-image score columns, index-aligned with `frame` (NaN where not computable).

    `image_vectors` maps image_sha256 -> embedding; `text_vectors` maps each prompt and
    style prompt -> embedding."""
    # plain arrays filled by position, one DataFrame at the end (pandas' .at per cell was
    # most of a cached re-score's time)
    columns = {c: np.full(len(frame), np.nan) for c in SCORE_COLUMNS}
    position = {idx: i for i, idx in enumerate(frame.index)}

    out = _Writer(columns, position)
    scorable = is_scorable(frame)
    rows = frame[scorable].to_dict("index")
    vec = {idx: image_vectors.get(r["image_sha256"]) for idx, r in rows.items()}
    rows = {idx: r for idx, r in rows.items() if vec[idx] is not None}

    base_keys = {idx: _baseline_key(r) for idx, r in rows.items()}
    cell_keys = {idx: _cell_key(r) for idx, r in rows.items()}
    baselines: dict[tuple, list[int]] = {}
    cells: dict[tuple, list[int]] = {}
    for idx, r in rows.items():
        if not r["lora"] and base_keys[idx] is not None:
            baselines.setdefault(base_keys[idx], []).append(idx)
        if cell_keys[idx] is not None:
            cells.setdefault(cell_keys[idx], []).append(idx)

    for idx, r in rows.items():
        v = vec[idx]
        prompt_vec = text_vectors.get(r["prompt"])
        if prompt_vec is not None:
            cos = float(np.dot(v, prompt_vec))
            out[idx, "clip_cosine"] = cos
            out[idx, "clip_score"] = float(clip_score_from_cosine(cos))
        if not r["lora"]:
            out[idx, "lora_effect"] = 0.0
        else:
            base_idx = baselines.get(base_keys[idx], [])
            base = vec[base_idx[0]] if base_idx else None
            if base is not None:
                out[idx, "lora_effect"] = 1.0 - float(np.dot(v, base))
            style = style_prompt_for(r["lora"], style_prompts)
            style_vec = text_vectors.get(style) if style else None
            if style_vec is not None:
                style_cos = float(np.dot(v, style_vec))
                out[idx, "style_cosine"] = style_cos
                if base is not None:
                    out[idx, "style_shift"] = style_cos - float(np.dot(base, style_vec))
        others = [j for j in cells.get(cell_keys[idx], []) if rows[j]["provider"] != r["provider"]]
        if others:
            out[idx, "agreement"] = float(np.mean([np.dot(v, vec[j]) for j in others]))
    return pd.DataFrame(columns, index=frame.index, dtype=float)


def baseline_positions(frame: pd.DataFrame) -> np.ndarray:
    """Per row (by position): the position of its same-seed no-LoRA baseline row (same
    provider, prompt, seed, options, image index), itself for a baseline row, -1 when there
    is none (unseeded, no image, or no baseline generated). Computed once per frame and shared
    by every scorer's gain."""
    cols = [c for c in ("provider", "prompt_id", "seed", "options", "image_index", "lora", *INPUT_AXES)
            if c in frame.columns]
    ok = is_scorable(frame).to_numpy()
    records = frame[cols].to_dict("records")
    keys = [_baseline_key(r) if good else None for r, good in zip(records, ok)]
    first: dict[tuple, int] = {}
    for pos, (r, key) in enumerate(zip(records, keys)):
        if key is not None and not r["lora"]:
            first.setdefault(key, pos)
    return np.array([first.get(k, -1) if k is not None else -1 for k in keys], dtype=np.int64)


def gain_over_baseline(frame: pd.DataFrame, values: pd.Series, positions: np.ndarray | None = None) -> pd.Series:
    """Per image: its value minus the value of its same-seed no-LoRA baseline image — the
    change a LoRA made to a scorer's number (aesthetic gain, preference gain). Baseline rows
    get 0; NaN for an unseeded row or one whose baseline is missing or unscored.
    `positions`: baseline_positions(frame), when the caller computes several gains."""
    pos = baseline_positions(frame) if positions is None else positions
    v = values.to_numpy(dtype=float)
    base = np.where(pos >= 0, v[np.clip(pos, 0, None)], np.nan)
    return pd.Series(v - base, index=frame.index, dtype=float)


def texts_needed(frame: pd.DataFrame, style_prompts: Mapping[str, str | None]) -> list[str]:
    """Every prompt and style prompt the metrics of `frame` will look up."""
    scorable = frame[is_scorable(frame)]
    texts = [str(p) for p in scorable["prompt"].dropna().unique()]
    for lora in scorable["lora"].dropna().unique():
        style = style_prompt_for(str(lora), style_prompts)
        if style:
            texts.append(style)
    return list(dict.fromkeys(texts))


def agreement_matrix(frame: pd.DataFrame, image_vectors: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Mean image-image cosine for every provider pair over the cells both generated."""
    rows = frame[is_scorable(frame)].to_dict("records")
    by_cell: dict[tuple, dict[str, np.ndarray]] = {}
    for r in rows:
        v = image_vectors.get(r["image_sha256"])
        if v is not None and _cell_key(r) is not None:
            by_cell.setdefault(_cell_key(r), {}).setdefault(r["provider"], v)
    providers = sorted({r["provider"] for r in rows})
    sums = pd.DataFrame(0.0, index=providers, columns=providers)
    counts = pd.DataFrame(0, index=providers, columns=providers)
    for per_provider in by_cell.values():
        for a, va in per_provider.items():
            for b, vb in per_provider.items():
                sums.at[a, b] += float(np.dot(va, vb))
                counts.at[a, b] += 1
    return sums / counts.replace(0, np.nan)


def _median(frame: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(frame[column], errors="coerce").dropna() if column in frame else pd.Series(dtype=float)
    return float(values.median()) if len(values) else math.nan


def provider_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Per provider: images, failures, failure rate, latency min/median/p95 (seconds, over
    stored images; our wall time from submit to image), the median queue and inference
    times the provider itself reported (NaN where it reports none; docs/providers.md says
    what each provider's mean), mean cost per image and cost per megapixel (over images with
    a known cost; `cost_known` says how many)."""
    records = []
    for provider, group in frame.groupby("provider", sort=True):
        status = group["status"].astype(str).str.lower() if "status" in group else pd.Series("", index=group.index)
        failed = status.isin(FAILED_STATUSES)
        ok = is_scorable(group)
        latency = pd.to_numeric(group.loc[ok, "latency_s"], errors="coerce").dropna()
        cost = pd.to_numeric(group.loc[ok, "cost_usd"], errors="coerce")
        known = cost.notna()
        if "width" in group and "height" in group:
            mp = (pd.to_numeric(group.loc[ok, "width"], errors="coerce")
                  * pd.to_numeric(group.loc[ok, "height"], errors="coerce")) / 1e6
        else:  # a frame without image sizes: no cost per megapixel
            mp = pd.Series(math.nan, index=cost.index)
        attempted = int(ok.sum() + failed.sum())
        records.append(
            {
                "provider": provider,
                "images": int(ok.sum()),
                "failed": int(failed.sum()),
                "failure_rate": (float(failed.sum()) / attempted) if attempted else math.nan,
                "latency_min": float(latency.min()) if len(latency) else math.nan,
                "latency_median": float(latency.median()) if len(latency) else math.nan,
                "latency_p95": float(np.percentile(latency, 95)) if len(latency) else math.nan,
                "queue_median": _median(group.loc[ok], "queue_s"),
                "inference_median": _median(group.loc[ok], "inference_s"),
                "cost_known": int(known.sum()),
                "cost_per_image": float(cost[known].mean()) if known.any() else math.nan,
                "cost_per_mp": float(cost[known].sum() / mp[known].sum()) if known.any() and mp[known].sum() > 0 else math.nan,
                "cost_total": float(cost[known].sum()) if known.any() else 0.0,
            }
        )
    return pd.DataFrame.from_records(records).set_index("provider") if records else pd.DataFrame()


def aggregate(
    scored: pd.DataFrame,
    metrics: Sequence[str] = AGGREGATE_METRICS,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean and t-interval (see evals.stats) of each metric per (lora, scale, provider) — and
    per denoising strength in a run sweeping them, never pooled across strengths — over the
    prompts and seeds of that group. Columns `<metric>_mean/_low/_high/_n`, and `strength`
    (NaN for text-to-image rows)."""
    ok = scored[is_scorable(scored)].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["scale_key"] = [scale_key(r) for r in ok.to_dict("records")]
    ok["strength"] = pd.to_numeric(ok["strength"], errors="coerce") if "strength" in ok.columns else math.nan
    records = []
    keys = ["lora", "scale_key", "provider", "strength"]
    for (lora, skey, provider, strength), group in ok.groupby(keys, sort=True, dropna=False):
        rec: dict[str, Any] = {"lora": lora, "scale_key": skey, "provider": provider, "images": len(group),
                               "strength": float(strength)}
        rec["scale"] = float(skey) if skey and "+" not in skey else math.nan
        for m in metrics:
            if m not in group:
                continue
            ci = mean_ci(pd.to_numeric(group[m], errors="coerce"), confidence)
            rec[f"{m}_mean"], rec[f"{m}_low"], rec[f"{m}_high"], rec[f"{m}_n"] = ci.mean, ci.low, ci.high, ci.n
        records.append(rec)
    return pd.DataFrame.from_records(records)


def iter_loras(frame: pd.DataFrame) -> Iterable[str]:
    """Single-LoRA ids present in the frame (stacks and the baseline left out)."""
    for lora in sorted(frame["lora"].dropna().unique()):
        if lora and "+" not in lora:
            yield str(lora)
