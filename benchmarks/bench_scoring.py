"""Scoring benchmarks (results: benchmarks/RESULTS-scoring.md).

1. Throughput, batched vs one image at a time, through `Embedder.images` (image decode +
   preprocess + forward + cache write): the tiny random CLIP, and ViT-B-32 with random
   weights (same architecture and cost as the real ViT-B-32; weights don't change speed).
2. A cached re-score of a real run of >= 1,000 images (tiny Z-Image pipeline, scored once
   with tiny-random): `score_run` again must do no forward pass; goal under 1 s.

    python benchmarks/bench_scoring.py [--images N] [--vit-images N] [--skip-vit] [--skip-rescore]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _machine import machine  # noqa: E402  (benchmarks/ is the script's folder)


def noise_images(directory: Path, n: int, size: int) -> list[tuple[str, Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        path = directory / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        items.append((hashlib.sha256(path.read_bytes()).hexdigest(), path))
    return items


def throughput(clip: str, items: list[tuple[str, Path]], batch_size: int, workdir: Path) -> tuple[float, int]:
    from lorascope.evals.scorer import Embedder

    emb = Embedder.open(clip, cache_path=workdir / f"emb-{clip.replace(':', '_')}-{batch_size}.db", batch_size=batch_size)
    emb._model()  # load outside the timing: model build/load is a one-off
    start = time.perf_counter()
    emb.images(items)
    seconds = time.perf_counter() - start
    passes = emb.forward_passes
    emb.close()
    return len(items) / seconds, passes


def bench_throughput(clip: str, n: int, size: int, batches: list[int], workdir: Path) -> None:
    items = noise_images(workdir / f"imgs-{size}", n, size)
    print(f"\n## throughput: {clip}, {n} images of {size}x{size} px (decode + preprocess + forward + cache write)")
    print("| batch size | images/s | forward passes |")
    print("|---:|---:|---:|")
    for b in batches:
        rate, passes = throughput(clip, items, b, workdir)
        print(f"| {b} | {rate:.1f} | {passes} |")


def bench_rescore(workdir: Path) -> None:
    from lorascope.evals.pytest_plugin import SUITES_DIR
    from lorascope.evals.scorer import Embedder
    from lorascope.evals.scoring import score_run
    from lorascope.harness.runner import run_suite
    from lorascope.harness.store import SharedCache
    from lorascope.harness.suite import parse_suite

    suite_text = (SUITES_DIR / "tiny-styles.yaml").read_text()
    prompts = "\n".join(f"  - id: p{i}\n    text: test prompt number {i} with a lighthouse and a dinosaur" for i in range(10))
    suite_text = suite_text.split("prompts:")[0] + "prompts:\n" + prompts + "\n" + (
        "seeds: [" + ", ".join(str(s) for s in range(12)) + "]\nsize: 32x32\nsteps: 1\n"
    )
    suite_text = suite_text.replace("scales: [0, 0.5, 1.0]", "scales: [0.25, 0.5, 1.0, 1.5]").replace(
        "name: tiny-styles", "name: bench-rescore"
    )
    suite = parse_suite(suite_text, SUITES_DIR / "bench-rescore.yaml")
    run_dir = workdir / "run"
    t = time.perf_counter()
    run_suite(suite, run_dir, progress=False, cache=SharedCache(workdir / "gen-cache"))
    gen_s = time.perf_counter() - t

    cache = workdir / "embeddings.db"
    first = Embedder.open("tiny-random", cache_path=cache)
    t = time.perf_counter()
    s1 = score_run(run_dir, embedder=first, progress=False)
    first_s = time.perf_counter() - t
    first.close()

    timings = []
    for _ in range(3):
        again = Embedder.open("tiny-random", cache_path=cache)
        t = time.perf_counter()
        s2 = score_run(run_dir, embedder=again, progress=False)
        timings.append(time.perf_counter() - t)
        assert again.forward_passes == 0 and again.model_loads == 0, "cached re-score ran the model"
        again.close()
    print(f"\n## cached re-score: {s1.images} images (run generated in {gen_s:.1f} s)")
    print("| step | seconds | forward passes |")
    print("|---|---:|---:|")
    print(f"| first score (tiny-random, model build included) | {first_s:.2f} | {s1.forward_passes} |")
    print(f"| re-score, cache warm (best of 3; runs {', '.join(f'{x:.2f}' for x in timings)}) | {min(timings):.2f} | {s2.forward_passes} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="images for the tiny-random throughput")
    parser.add_argument("--vit-images", type=int, default=32, help="images for the ViT-B-32 throughput")
    parser.add_argument("--skip-vit", action="store_true")
    parser.add_argument("--skip-rescore", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice; 1 is steadier on a loaded machine)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="lorascope-bench-scoring-") as tmp:
        workdir = Path(tmp)
        bench_throughput("tiny-random", args.images, 64, [1, 8, 32, 128], workdir)
        if not args.skip_vit:
            bench_throughput("ViT-B-32:random", args.vit_images, 256, [1, 16, 32], workdir)
        if not args.skip_rescore:
            bench_rescore(workdir)


if __name__ == "__main__":
    main()
