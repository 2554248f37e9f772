"""Synthetic run folders for the report tests: real PNG files made with Pillow, a results
frame with the harness's columns (and optionally the evals' score columns), catalogue
entries, aggregates and recommendations, so the renderer and the browser tests run without
the harness or a model."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from lorascope.registry.models import LoraEntry
from lorascope.reports.inputs import ProviderStats, Recommendation, RunData, ScaleAggregate

XSS_PROMPT = 'A <script>alert("prompt")</script> beach "><img src=x onerror=alert(1)>'
XSS_NOTE = '</div><script>alert("note")</script><img src=x onerror="alert(2)">'
XSS_ERROR = 'HTTP 422: "><svg onload=alert(3)><script>alert("error")</script>'

PROVIDERS = ["fal", "novita"]
LORAS = ["ink-wash", "pixel-art"]
SCALES = [0.5, 0.8, 1.0]
PROMPTS = [("trex", "A T-Rex relaxing on a beach"), ("lighthouse", "A lighthouse on a cliff at dusk")]
SEEDS = [42, 1234]


def png(path: Path, color: tuple[int, int, int], size: int = 96, label: str = "") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (size, size), color)
    draw = ImageDraw.Draw(img)
    draw.rectangle([size // 4, size // 4, size * 3 // 4, size * 3 // 4], outline=(255, 255, 255), width=2)
    if label:
        draw.text((4, 4), label[:12], fill=(255, 255, 255))
    img.save(path, format="PNG")
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def entry(lora_id: str, recommended: float = 0.8, notes: str | None = None, style: str | None = None) -> LoraEntry:
    return LoraEntry(
        id=lora_id,
        name=lora_id.replace("-", " ").title(),
        source={"type": "path", "path": f"loras/{lora_id}.safetensors"},
        kind="style",
        triggers=[f"{lora_id.replace('-', '')}style"],
        scale={"recommended": recommended, "range": [0.3, 1.2]},
        style_prompt=style or f"an image in {lora_id} style",
        license="apache-2.0",
        notes=notes,
    )


def _row(run: Path, provider: str, lora: str, scale: float | None, pid: str, prompt: str, seed: int,
         rng: np.random.Generator, scored: bool, *, status: str = "ok", error: str | None = None,
         nsfw: bool = False) -> dict:
    idx = (PROVIDERS.index(provider) * 97 + (LORAS.index(lora) + 1 if lora else 0) * 41
           + int((scale or 0) * 100) + seed % 50 + [p for p, _ in PROMPTS].index(pid) * 13)  # every image distinct
    color = (idx * 37 % 256, idx * 59 % 256, idx * 83 % 256)
    row = {
        "provider": provider, "lora": lora, "scale": scale if lora else math.nan,
        "scales": "" if not lora else f"{scale:g}", "prompt_id": pid, "prompt": prompt,
        "final_prompt": (f"{lora.replace('-', '')}style, " if lora else "") + prompt,
        "seed": seed, "status": status, "error": error, "image_path": None, "image_sha256": None,
        "width": 96, "height": 96, "latency_s": float(rng.uniform(0.5, 3.0)),
        "cost_usd": 0.0085 if provider == "fal" else 0.006, "cost_source": "estimated",
        "fingerprint": f"fp-{provider}-{lora}-{scale}-{pid}-{seed}", "cell_id": f"{lora}-{scale}-{pid}-{seed}",
        "options": "{}", "endpoint": f"{provider}/z-image-turbo", "model_version": f"{provider}-v1",
        "task_id": None, "nsfw": nsfw,
    }
    if status == "ok":
        rel = f"images/{provider}-{lora or 'base'}-{scale}-{pid}-{seed}.png"
        row["image_sha256"] = png(run / rel, color, label=f"{provider[:3]} {scale or 'b'}")
        row["image_path"] = rel
    if scored:
        row["clip_score"] = float(rng.uniform(0.4, 0.8)) if status == "ok" else math.nan
        row["clip_cosine"] = row["clip_score"] / 2.5
        row["style_shift"] = (float((scale or 0) * 0.1 + rng.normal(0, 0.01)) if lora and status == "ok"
                              else math.nan)
        row["lora_effect"] = float((scale or 0) * 0.2) if lora and status == "ok" else math.nan
        row["agreement"] = float(rng.uniform(0.8, 1.0)) if status == "ok" else math.nan
    return row


def make_run(run: Path, *, scored: bool = True, prompt_text: dict[str, str] | None = None,
             error_text: str = "HTTP 500 from provider: internal error",
             notes: dict[str, str] | None = None) -> RunData:
    """A 2-provider x 2-LoRA x 3-scale x 2-prompt x 2-seed run (+ baselines), with one failed
    cell (fal, ink-wash 1.0, trex, 42) and one NSFW-flagged cell (novita, pixel-art 0.5,
    lighthouse, 1234)."""
    rng = np.random.default_rng(7)
    prompts = [(pid, (prompt_text or {}).get(pid, text)) for pid, text in PROMPTS]
    rows = []
    for provider in PROVIDERS:
        for pid, text in prompts:
            for seed in SEEDS:
                rows.append(_row(run, provider, "", None, pid, text, seed, rng, scored))
                for lora in LORAS:
                    for scale in SCALES:
                        failed = (provider, lora, scale, pid, seed) == ("fal", "ink-wash", 1.0, "trex", 42)
                        nsfw = (provider, lora, scale, pid, seed) == ("novita", "pixel-art", 0.5, "lighthouse", 1234)
                        rows.append(_row(run, provider, lora, scale, pid, text, seed, rng, scored,
                                         status="failed" if failed else "ok",
                                         error=error_text if failed else None, nsfw=nsfw))
    frame = pd.DataFrame(rows)
    loras = {lid: entry(lid, notes=(notes or {}).get(lid)) for lid in LORAS}
    return RunData(
        run_dir=run, results=frame, suite_name="synthetic-smoke",
        suite={"name": "synthetic-smoke", "loras": LORAS, "scales": SCALES,
               "prompts": [{"id": p, "text": t} for p, t in prompts], "seeds": SEEDS},
        loras=loras, scored=scored, score_model="tiny-random" if scored else "",
        aggregates=aggregates(frame) if scored else [],
        recommendations=[Recommendation(lora=l, provider=p, scale=0.8 if p == "fal" else 1.0,
                                        reason="smallest scale reaching 90% of the largest style shift")
                         for l in LORAS for p in PROVIDERS] if scored else [],
        provider_stats=provider_stats(frame),
    )


def aggregates(frame: pd.DataFrame) -> list[ScaleAggregate]:
    out = []
    for metric in ("clip_score", "style_shift"):
        for (lora, provider, scale), group in frame.groupby(["lora", "provider", "scale"], dropna=False):
            values = group[metric].dropna().to_numpy()
            if not len(values):
                continue
            mean = float(values.mean())
            half = 1.96 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else None
            out.append(ScaleAggregate(lora=lora, provider=provider, scale=None if lora == "" else float(scale),
                                      metric=metric, mean=mean, ci_low=None if half is None else mean - half,
                                      ci_high=None if half is None else mean + half, n=len(values)))
    return out


def provider_stats(frame: pd.DataFrame) -> list[ProviderStats]:
    stats = []
    for provider, group in frame.groupby("provider", sort=False):
        lat = group["latency_s"]
        failed = int((group["status"] != "ok").sum())
        stats.append(ProviderStats(
            provider=provider, images=len(group), failed=failed, failure_rate=failed / len(group),
            latency_min=float(lat.min()), latency_median=float(lat.median()), latency_p95=float(lat.quantile(0.95)),
            cost_total=float(group["cost_usd"].sum()), cost_per_image=float(group["cost_usd"].mean()),
            cost_per_mp=float(group["cost_usd"].mean() / (96 * 96 / 1e6)), cost_source="estimated",
        ))
    return stats


def grid_images(view, **coords: str) -> list:
    """The images of a run report's grid data at `coords` (axis id -> value key, e.g.
    lora="ink-wash", scale="baseline", provider="fal"); a wildcard position (-1: a baseline's
    LoRA, an option a provider lacks) matches any value, as it does in the page."""
    axes = view.grid.axes
    wanted = {}
    for axis_id, key in coords.items():
        axis_id = axis_id.replace("opt_", "opt:")
        index = next(i for i, a in enumerate(axes) if a.id == axis_id)
        wanted[index] = next(v for v, value in enumerate(axes[index].values) if value.key == key)
    return [img for img in view.grid.images
            if all(img.at[i] in (-1, v) for i, v in wanted.items())]
