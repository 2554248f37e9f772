"""`lorascope demo`: the whole product, offline, in under a minute on a laptop CPU.

What it does, with the real code path of every stage:
1. writes three LoRAs that fit the tiny random-weight Z-Image transformer, one per key
   format seen in the wild (diffusers/peft, ai-toolkit/ComfyUI, kohya), into DIR/loras/;
2. writes a catalogue for them (DIR/loras.yaml) and a suite (DIR/suite.yaml) that runs them
   on the local diffusers provider with `model: tiny-random`;
3. runs the suite into DIR/run (the harness: store, fingerprints, resume), scores it with
   the tiny random CLIP, recommends a scale per LoRA, and writes DIR/run/report.html;
4. an image-to-image sweep: writes a small input picture (DIR/inputs/demo-photo.png) and
   DIR/suite-img2img.yaml (the same LoRAs and scales at two denoising strengths over it),
   runs, scores (with fidelity to the input) and reports it into DIR/img2img/report.html,
   which shows the input at the head of each LoRA's grid.

Everything is kept so people can re-run pieces by hand (`lorascope run DIR/suite.yaml
--out DIR/run`, `lorascope score DIR/run --clip tiny-random`, `lorascope report DIR/run`).
The images are noise from random weights; the report says so in a banner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lorascope.reports.errors import ReportError

DEMO_SIZE = "128x128"
DEMO_STEPS = 2
DEMO_SCALES = [0.25, 0.5, 1.0, 1.5]
DEMO_SEEDS = [42, 1234]
DEMO_PROMPTS = [
    {"id": "trex", "text": "A T-Rex relaxing on a beach, lying on a sun lounger and wearing sunglasses."},
    {"id": "lighthouse", "text": "A lighthouse on a cliff at dusk, waves crashing below."},
]
#: (id, name, key format, writer seed, strength, trigger, recommended scale, style prompt)
DEMO_LORAS = [
    ("demo-ink", "Demo Ink Wash (diffusers keys)", "diffusers", 11, 1.0, "inkw4sh", 0.8,
     "an ink wash painting, black ink on rice paper"),
    ("demo-pixel", "Demo Pixel Art (ai-toolkit keys)", "ai-toolkit", 22, 1.5, "p1xel", 1.0,
     "pixel art, 8-bit video game sprite"),
    ("demo-neon", "Demo Neon (kohya keys)", "kohya", 33, 0.7, "n3on", 0.5,
     "neon lights, glowing synthwave colours at night"),
]
CLIP_MODEL = "tiny-random"
#: The img2img sweep: one prompt, one seed, two strengths (2 steps x 0.5 = one denoising step).
DEMO_STRENGTHS = [0.5, 1.0]
DEMO_INPUT = "inputs/demo-photo.png"
#: Smaller than the text-to-image grid: 26 more cells must cost the demo only seconds.
DEMO_IMG2IMG_SIZE = "64x64"

CATALOGUE_HEADER = """\
# Demo catalogue written by `lorascope demo`: three LoRAs with RANDOM weights that fit the
# tiny random-weight Z-Image transformer, one per key format (diffusers, ai-toolkit, kohya).
# They are not real styles; the triggers and style prompts only exercise the code path.
# For real LoRAs see the project's loras.yaml (hub repos), which hosted providers can fetch.
"""

SUITE_HEADER = """\
# Demo suite written by `lorascope demo`: runs offline on the tiny random-weight pipeline.
# Re-run by hand:  lorascope run {suite} --out {run}
# For the real model on a GPU use `- diffusers: {{model: Tongyi-MAI/Z-Image-Turbo}}` and a
# catalogue of real LoRAs; for hosted providers see the banner in the report.
"""


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    run_dir: Path
    report: Path
    seconds: float
    timings: dict[str, float]
    img2img_report: Path | None = None


def tiny_linear_shapes() -> dict[str, tuple[int, int]]:
    """(out, in) of every Linear in the tiny transformer (built on the meta device: no
    memory, no weights)."""
    import torch
    from diffusers import ZImageTransformer2DModel

    from lorascope.harness.lora_writer import linear_shapes
    from lorascope.harness.providers.tiny_zimage import TRANSFORMER_CONFIG

    with torch.device("meta"):
        transformer = ZImageTransformer2DModel(**TRANSFORMER_CONFIG)
    return linear_shapes(transformer)


def write_loras(out_dir: Path) -> dict[str, Path]:
    """The demo LoRA files, fitted to the tiny transformer's Linear shapes."""
    from lorascope.harness.lora_writer import write_lora

    shapes = tiny_linear_shapes()
    paths = {}
    for lora_id, _, key_format, seed, strength, *_ in DEMO_LORAS:
        target = out_dir / "loras" / f"{lora_id}.{key_format}.safetensors"
        write_lora(target, shapes, key_format=key_format, rank=4, seed=seed, strength=strength)
        paths[lora_id] = target
    return paths


def catalogue_text() -> str:
    entries = []
    for lora_id, name, key_format, _, _, trigger, recommended, style in DEMO_LORAS:
        entries.append({
            "id": lora_id,
            "name": name,
            "source": {"path": f"loras/{lora_id}.{key_format}.safetensors"},
            "kind": "style",
            "triggers": [trigger],
            "scale": {"recommended": recommended, "range": [0.25, 1.5]},
            "style_prompt": style,
            "license": "apache-2.0",
            "tags": ["demo", key_format],
            "notes": f"Random weights in {key_format} key layout, written by lorascope demo.",
        })
    return CATALOGUE_HEADER + yaml.safe_dump({"version": 1, "loras": entries}, sort_keys=False, allow_unicode=True)


def suite_text(suite_path: Path, run_dir: Path) -> str:
    suite = {
        "name": "demo-tiny-random",
        "description": "lorascope demo: random-weight models, offline",
        "catalogue": "loras.yaml",
        "providers": [{"diffusers": {"model": "tiny-random"}}],
        "loras": [lora_id for lora_id, *_ in DEMO_LORAS],
        "scales": DEMO_SCALES,
        "prompts": DEMO_PROMPTS,
        "seeds": DEMO_SEEDS,
        "size": DEMO_SIZE,
        "steps": DEMO_STEPS,
    }
    return SUITE_HEADER.format(suite=suite_path, run=run_dir) + yaml.safe_dump(suite, sort_keys=False)


def img2img_suite_text(suite_path: Path, run_dir: Path) -> str:
    suite = {
        "name": "demo-img2img-tiny-random",
        "description": "lorascope demo: image-to-image over one input at two strengths, random-weight models",
        "catalogue": "loras.yaml",
        "mode": "img2img",
        "providers": [{"diffusers": {"model": "tiny-random"}}],
        "loras": [lora_id for lora_id, *_ in DEMO_LORAS],
        "scales": DEMO_SCALES,
        "strengths": DEMO_STRENGTHS,
        "images": [{"id": "photo", "image": DEMO_INPUT}],
        "prompts": DEMO_PROMPTS[1:],
        "seeds": DEMO_SEEDS[:1],
        "size": DEMO_IMG2IMG_SIZE,
        "steps": DEMO_STEPS,
    }
    return SUITE_HEADER.format(suite=suite_path, run=run_dir) + yaml.safe_dump(suite, sort_keys=False)


def demo_input_png() -> bytes:
    """A small picture with structure to keep (sky gradient, sea, a lighthouse block), the same
    bytes every time so a re-run finds its cells stored."""
    import io

    import numpy as np
    from PIL import Image

    side = int(DEMO_IMG2IMG_SIZE.split("x")[0])
    y, x = np.mgrid[0:side, 0:side]
    img = np.zeros((side, side, 3), dtype=np.uint8)
    img[..., 0] = 90 + y * 100 // side
    img[..., 1] = 120 + y * 60 // side
    img[..., 2] = 230 - y * 40 // side
    sea = y > side * 2 // 3
    img[sea] = np.stack([20 + (x[sea] * 7 % 30), 60 + (x[sea] * 3 % 40), 140 + (y[sea] % 20)], axis=-1)
    tower = (abs(x - side // 2) < side // 14) & (y > side // 4) & ~sea
    img[tower] = (235, 235, 225)
    img[tower & ((y // (side // 16)) % 2 == 0)] = (200, 40, 40)
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def run_demo(out_dir: Path, *, progress: bool = True, echo=print) -> DemoResult:
    """Write the demo inputs into `out_dir`, run, score, recommend and report."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)
    run_dir = out_dir / "run"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out_dir}: cannot create the demo folder: {exc.strerror or exc}") from None

    t = time.perf_counter()
    write_loras(out_dir)
    _write(out_dir / "loras.yaml", catalogue_text())
    suite_path = out_dir / "suite.yaml"
    _write(suite_path, suite_text(suite_path, run_dir))
    timings["write inputs"] = time.perf_counter() - t
    echo(f"wrote {out_dir / 'loras'}/*.safetensors, {out_dir / 'loras.yaml'}, {suite_path}")

    from lorascope.harness.runner import run_suite
    from lorascope.harness.store import SharedCache
    from lorascope.harness.suite import load_suite

    from lorascope.harness.store import StoreError
    from lorascope.harness.suite import SuiteError

    t = time.perf_counter()
    try:
        suite = load_suite(suite_path)
        # A cache of its own: the demo shows real generation work, and leaves the user's
        # shared cache alone.
        summary = run_suite(suite, run_dir, progress=progress, cache=SharedCache(out_dir / ".cache"))
    except (SuiteError, StoreError) as exc:
        raise ReportError(f"demo run failed: {exc}", exit_code=1) from None
    timings["run"] = time.perf_counter() - t
    if summary.interrupted or summary.fatal:
        raise ReportError(f"demo run stopped: {summary.fatal or 'interrupted'}; re-run to resume", exit_code=1)
    counts = {k: sum(getattr(p, k) for p in summary.providers.values()) for k in ("total", "sent", "stored", "failed")}
    echo(f"run: {run_dir} ({counts['total']} cells: {counts['sent']} generated now, {counts['stored']} already "
         f"stored, {counts['failed']} failed)")

    t = time.perf_counter()
    echo(_score(run_dir, progress))
    timings["score"] = time.perf_counter() - t

    from lorascope.reports.service import write_run_data_report
    from lorascope.reports.sources import load_run_data

    t = time.perf_counter()
    data = load_run_data(run_dir)  # scores, aggregates and the evals stage's recommendations, read once
    echo("recommended scales (random weights: the numbers mean nothing about real LoRAs):")
    for line in _recommendation_lines(data):
        echo(line)
    timings["recommend"] = time.perf_counter() - t

    t = time.perf_counter()
    report = write_run_data_report(data)
    timings["report"] = time.perf_counter() - t

    t = time.perf_counter()
    img2img_report = _img2img_sweep(out_dir, progress, echo)
    timings["img2img"] = time.perf_counter() - t
    return DemoResult(out_dir=out_dir, run_dir=run_dir, report=report,
                      seconds=time.perf_counter() - started, timings=timings, img2img_report=img2img_report)


def _run(suite_path: Path, run_dir: Path, out_dir: Path, progress: bool):
    from lorascope.harness.runner import run_suite
    from lorascope.harness.store import SharedCache, StoreError
    from lorascope.harness.suite import SuiteError, load_suite

    try:
        summary = run_suite(load_suite(suite_path), run_dir, progress=progress, cache=SharedCache(out_dir / ".cache"))
    except (SuiteError, StoreError) as exc:
        raise ReportError(f"demo run failed: {exc}", exit_code=1) from None
    if summary.interrupted or summary.fatal:
        raise ReportError(f"demo run stopped: {summary.fatal or 'interrupted'}; re-run to resume", exit_code=1)
    return summary


def _img2img_sweep(out_dir: Path, progress: bool, echo) -> Path:
    """The image-to-image part: input picture, suite, run, score (fidelity included), report."""
    from lorascope.harness.store import atomic_write
    from lorascope.reports.service import write_run_data_report
    from lorascope.reports.sources import load_run_data

    atomic_write(out_dir / DEMO_INPUT, demo_input_png())
    suite_path = out_dir / "suite-img2img.yaml"
    run_dir = out_dir / "img2img"
    _write(suite_path, img2img_suite_text(suite_path, run_dir))
    summary = _run(suite_path, run_dir, out_dir, progress)
    counts = {k: sum(getattr(p, k) for p in summary.providers.values()) for k in ("total", "sent", "stored", "failed")}
    echo(f"img2img run: {run_dir} ({counts['total']} cells at strengths "
         f"{', '.join(f'{s:g}' for s in DEMO_STRENGTHS)} over {out_dir / DEMO_INPUT}: {counts['sent']} generated now, "
         f"{counts['stored']} already stored, {counts['failed']} failed)")
    _score(run_dir, progress)
    return write_run_data_report(load_run_data(run_dir))


#: The preference scorer the demo draws a curve for: HPSv2's architecture (open_clip, already
#: loaded for CLIP, so it costs the demo little) with random weights, labelled so in the report.
DEMO_SCORERS = "clip,hpsv2:tiny-random"


def _score(run_dir: Path, progress: bool) -> str:
    """Score with the tiny random CLIP and a random-weight preference scorer in one pass
    through the evals stage; returns a one-line summary."""
    from lorascope.evals.scoring import score_run_with

    summary = score_run_with(run_dir, DEMO_SCORERS, clip=CLIP_MODEL, progress=progress)
    others = ", ".join(f"{s.label} (random weights)" for s in summary.scorers if s.name != "clip")
    return f"scored {summary.clip.images} images with {summary.clip.clip_label} and {others}"


def _recommendation_lines(data) -> list[str]:
    """The evals stage's recommended scale per LoRA and provider (what `lorascope recommend
    RUN` finds), beside the catalogue's."""
    lines = []
    for rec in data.recommendations:
        entry = data.loras.get(rec.lora)
        scale = f"{rec.scale:g}" if rec.scale is not None else "none"
        catalogue = f"{entry.scale.recommended:g}" if entry is not None else "-"
        lines.append(f"  {rec.lora} on {rec.provider}: scale {scale} (catalogue {catalogue}): {rec.reason}")
    return lines
