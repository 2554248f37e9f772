"""How `lorascope report` scales: a synthetic run (real PNG files, harness columns, score
columns) of about 2,000 or 10,000 images, rendered cold (thumbnails made) and warm
(thumbnails reused), then opened in headless Chromium several times: since navigation
start, when the first screen's grids were built (the page's script, before the load
event), the load event, and when the other grids were built (one per task after it); how
many elements and images the page holds (only the chosen slice of each grid), how many
images the browser fetched up front (lazy loading), and the time to load every image of
the default view when forced.

Prints figures; results are recorded in benchmarks/RESULTS-reports.md.
Run: .venv/bin/python benchmarks/bench_report.py --images 2000|10000 [--images-side 512] [--opens 3]
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
SCALES = [0.5, 0.8, 1.0, 1.5]
#: images wanted -> (LoRAs, prompts, seeds): 4 providers x prompts x seeds x (1 + LoRAs x 4 scales)
SHAPES = {2000: (5, 5, 5), 10000: (10, 10, 6)}


def make_frame(run: Path, side: int, shape: tuple[int, int, int]) -> pd.DataFrame:
    n_loras, n_prompts, n_seeds = shape
    loras = [f"style-{i}" for i in range(n_loras)]
    rng = np.random.default_rng(0)
    rows = []
    n = 0
    for provider in PROVIDERS:
        for pid in [f"p{i}" for i in range(n_prompts)]:
            for seed in range(1, n_seeds + 1):
                for lora, scale in [("", math.nan)] + [(l, s) for l in loras for s in SCALES]:
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


def browser_figures(report: Path, opens: int) -> dict[str, float]:
    from report_browser import browser_context, load_all_images, open_page

    with browser_context() as context:
        loads, firsts, alls = [], [], []
        for _ in range(opens):  # a fresh page each time; the first open also warms the file cache
            page, log = open_page(context, report.as_uri())  # returns once every grid is built
            timing = page.evaluate("""() => ({load: performance.getEntriesByType('navigation')[0].loadEventEnd,
                start: +document.body.dataset.scriptStartMs, first: +document.body.dataset.firstMs,
                ready: +document.body.dataset.readyMs})""")
            loads.append(timing["load"] / 1000)
            firsts.append((timing["start"] + timing["first"]) / 1000)
            alls.append((timing["start"] + timing["ready"]) / 1000)
            if len(loads) < opens:
                page.close()
        fetched_up_front = page.evaluate(
            "() => Array.from(document.querySelectorAll('main img')).filter(i => i.complete && i.naturalWidth > 0).length")
        total = page.evaluate("() => document.querySelectorAll('main img').length")
        elements = page.evaluate("() => document.getElementsByTagName('*').length")
        t = time.perf_counter()
        images = load_all_images(page)
        all_s = time.perf_counter() - t
        broken = sum(1 for i in images if i["w"] == 0)
        return {"load_event_s": loads, "first_screen_grids_built_s": firsts, "all_grids_built_s": alls,
                "dom_elements": elements, "img_elements": total, "loaded_at_load_event": fetched_up_front,
                "force_all_s": all_s, "broken": broken, "problems": len(log.problems())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, choices=sorted(SHAPES), default=2000, help="about how many images")
    parser.add_argument("--images-side", type=int, default=512, help="pixel size of the synthetic images")
    parser.add_argument("--opens", type=int, default=3, help="how many times to open the report")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    run = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t = time.perf_counter()
        frame = make_frame(run, args.images_side, SHAPES[args.images])
        loras = [l for l in frame.lora.unique() if l]
        print(f"synthetic run: {len(frame)} images of {args.images_side}px written in {time.perf_counter() - t:.1f} s")
        data = RunData(
            run_dir=run, results=frame, suite_name="bench", loras={l: entry(l) for l in loras}, scored=True,
            score_model="synthetic", aggregates=aggregates(frame.assign(lora=frame.lora)),
            recommendations=[Recommendation(lora=l, provider=p, scale=0.8) for l in loras for p in PROVIDERS],
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
            figures = browser_figures(report, args.opens)
            show = lambda v: (f"{v:.2f}" if isinstance(v, float)  # noqa: E731
                              else "[" + ", ".join(f"{x:.2f}" for x in v) + "]" if isinstance(v, list) else str(v))
            print("chromium: " + ", ".join(f"{k}={show(v)}" for k, v in figures.items()))
    finally:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
