"""How `lorascope report` scales: a synthetic 2,000+-image run (real PNG files, harness
columns, score columns), rendered cold (thumbnails made) and warm (thumbnails reused), then
opened in headless Chromium: time to the load event, how many images the browser fetched
up front (lazy loading), and time until every image has loaded when forced.

Prints figures; results are recorded in benchmarks/RESULTS-reports.md.
Run: .venv/bin/python benchmarks/bench_report.py [--images-side 512]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "reports"))

from report_fixtures import aggregates, entry, provider_stats  # noqa: E402

from lorascope.reports.inputs import Recommendation, RunData  # noqa: E402
from lorascope.reports.service import write_run_data_report  # noqa: E402

PROVIDERS = ["fal", "novita", "highway", "aimlapi"]
LORAS = [f"style-{i}" for i in range(5)]
SCALES = [0.5, 0.8, 1.0, 1.5]
PROMPTS = [f"p{i}" for i in range(5)]
SEEDS = [1, 2, 3, 4, 5]


def make_frame(run: Path, side: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    n = 0
    for provider in PROVIDERS:
        for pid in PROMPTS:
            for seed in SEEDS:
                for lora, scale in [("", math.nan)] + [(l, s) for l in LORAS for s in SCALES]:
                    n += 1
                    blocks = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)  # unique per image
                    rel = f"images/{n:05d}.png"
                    path = run / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(blocks).resize((side, side), Image.Resampling.NEAREST).save(path, compress_level=1)
                    sha = hashlib.sha256(path.read_bytes()).hexdigest()
                    rows.append({
                        "provider": provider, "lora": lora, "scale": scale, "scales": "" if not lora else f"{scale:g}",
                        "prompt_id": pid, "prompt": f"prompt {pid}", "final_prompt": f"prompt {pid}", "seed": seed,
                        "status": "succeeded", "error": "", "image_path": rel, "image_sha256": sha,
                        "width": side, "height": side, "latency_s": float(rng.uniform(1, 5)), "cost_usd": 0.008,
                        "cost_source": "estimated", "options": "{}", "endpoint": provider, "model_version": "v1",
                        "nsfw": False, "clip_score": float(rng.uniform(0.5, 0.8)),
                        "style_shift": float((scale if lora else 0) * 0.05 + rng.normal(0, 0.01)) if lora else math.nan,
                        "lora_effect": float(scale * 0.1) if lora else 0.0,
                    })
    return pd.DataFrame(rows)


def browser_figures(report: Path) -> dict[str, float]:
    from report_browser import browser_context, load_all_images, open_page

    with browser_context() as context:
        t = time.perf_counter()
        page, log = open_page(context, report.as_uri())
        load_s = time.perf_counter() - t
        fetched_up_front = page.evaluate(
            "() => Array.from(document.querySelectorAll('main img')).filter(i => i.complete && i.naturalWidth > 0).length")
        total = page.evaluate("() => document.querySelectorAll('main img').length")
        t = time.perf_counter()
        images = load_all_images(page)
        all_s = time.perf_counter() - t
        broken = sum(1 for i in images if i["w"] == 0)
        return {"load_event_s": load_s, "img_elements": total, "loaded_at_load_event": fetched_up_front,
                "force_all_s": all_s, "broken": broken, "problems": len(log.problems())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images-side", type=int, default=512, help="pixel size of the synthetic images")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    run = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t = time.perf_counter()
        frame = make_frame(run, args.images_side)
        print(f"synthetic run: {len(frame)} images of {args.images_side}px written in {time.perf_counter() - t:.1f} s")
        data = RunData(
            run_dir=run, results=frame, suite_name="bench", loras={l: entry(l) for l in LORAS}, scored=True,
            score_model="synthetic", aggregates=aggregates(frame.assign(lora=frame.lora)),
            recommendations=[Recommendation(lora=l, provider=p, scale=0.8) for l in LORAS for p in PROVIDERS],
            provider_stats=provider_stats(frame.assign(status="ok")),
        )
        t = time.perf_counter()
        report = write_run_data_report(data)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        write_run_data_report(data)
        warm = time.perf_counter() - t
        thumbs = list((run / "thumbs").glob("*.jpg"))
        thumb_bytes = sum(p.stat().st_size for p in thumbs)
        image_bytes = sum(p.stat().st_size for p in (run / "images").glob("*.png"))
        print(f"cpu cores: {os.cpu_count()}")
        print(f"render cold (thumbnails made): {cold:.2f} s; warm (thumbnails reused): {warm:.2f} s")
        print(f"report.html: {report.stat().st_size / 1e6:.2f} MB; thumbnails: {len(thumbs)} files, "
              f"{thumb_bytes / 1e6:.1f} MB (full images {image_bytes / 1e6:.1f} MB)")
        if not args.no_browser:
            figures = browser_figures(report)
            print("chromium: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in figures.items()))
    finally:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
