"""Plugin scorer benchmarks (results: benchmarks/RESULTS-scorers.md).

1. Throughput per scorer, one image per forward pass vs batched, through `score_items`
   (decode + preprocess + forward + cache write; model load outside the timing):
   - tiny: every built-in's tiny-random variant (what tests and the demo run);
   - `--full`: the real architectures at real size with random weights (speed does not depend
     on the weights): aesthetic = ViT-L-14 + the 768-d head (read from a .safetensors file,
     the real loading path), hpsv2 = open_clip ViT-H-14, pickscore = transformers CLIP-H
     (PickScore_v1's config). Slow on a CPU: keep --full-images small.
2. A cached re-score of 1,000 images with clip + aesthetic + hpsv2 + pickscore (tiny): every
   key is in the scalar cache, so no model loads and no image is opened; goal under 1 s.
   Then the same at run level (`score_run_with`, what `lorascope score --scorer` runs) on a
   real 1,008-image run.

    python benchmarks/bench_scorers.py [--images N] [--batch B] [--full] [--full-images N] [--threads T]
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

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def noise_items(directory: Path, n: int, size: int) -> list[tuple[str, Path, str]]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        path = directory / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        items.append((hashlib.sha256(path.read_bytes()).hexdigest(), path, f"{PROMPT} #{i % 7}"))
    return items


def _ctx(db: Path, clip: str | None = None):
    from lorascope.evals.embedding_cache import EmbeddingCache
    from lorascope.evals.scorer_plugin import ScorerContext

    return ScorerContext(cache=EmbeddingCache(db), clip=clip, device="cpu")


def _full_scorer(name: str, ctx, workdir: Path):
    """A real-size random-weight scorer through the real classes."""
    import os

    import torch

    if name == "aesthetic":
        from safetensors.torch import save_file

        from lorascope.evals.scorer_aesthetic import HEAD_ENV, AestheticScorer, build_head

        head = workdir / "head-768.safetensors"
        if not head.exists():
            torch.manual_seed(0)
            save_file({k: v.contiguous() for k, v in build_head(768).state_dict().items()}, str(head))
        os.environ[HEAD_ENV] = str(head)
        return AestheticScorer(None, ctx)  # ctx.clip = ViT-L-14:random
    if name == "hpsv2":
        import open_clip

        from lorascope.evals.scorer_hpsv2 import ARCH, HpsV2Scorer

        class FullRandomHps(HpsV2Scorer):
            model_id = "bench:hpsv2-ViT-H-14-random"

            def load(self) -> None:
                self.device = "cpu"
                self.model, _, self.preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None)
                self.model.eval()
                self.tokenizer = open_clip.get_tokenizer(ARCH)

        return FullRandomHps(None, ctx)
    if name == "pickscore":
        import open_clip
        from transformers import CLIPConfig, CLIPModel

        from lorascope.evals.scorer_clip import clip_mean_std
        from lorascope.evals.scorer_pickscore import PickScoreScorer

        class FullRandomPick(PickScoreScorer):
            model_id = "bench:pickscore-CLIP-H-random"

            def load(self) -> None:
                self.device = "cpu"
                cfg = CLIPConfig(
                    text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                     num_attention_heads=16, hidden_act="gelu"),
                    vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                       num_attention_heads=16, image_size=224, patch_size=14, hidden_act="gelu"),
                    projection_dim=1024)
                self.model = CLIPModel(cfg).eval()
                mean, std = clip_mean_std()
                self._image_tf = open_clip.image_transform(224, is_train=False, mean=mean, std=std)
                self._tokenizer = open_clip.SimpleTokenizer(context_length=77)
                self.processor = None

        return FullRandomPick(None, ctx)
    raise ValueError(name)


def throughput(make, items, batch: int, scorer=None) -> tuple[float, int]:
    from lorascope.evals.scorer_plugin import score_items

    scorer = scorer or make()
    scorer.forward_passes = 0
    scorer.ensure_loaded()  # build/load is a one-off, outside the timing
    if hasattr(scorer, "embedder"):
        scorer.embedder._model()
        scorer.embedder.model.forward_passes = 0
    start = time.perf_counter()
    score_items([scorer], items, batch_size=batch)
    seconds = time.perf_counter() - start
    passes = scorer.forward_passes + (scorer.embedder.forward_passes if scorer.name == "aesthetic" else 0)
    return len(items) / seconds, passes


def bench_tiny(n: int, batch: int, workdir: Path) -> None:
    from lorascope.evals.scorer_plugin import parse_scorers

    items = noise_items(workdir / "tiny-imgs", n, 64)
    print(f"\n## throughput, tiny-random variants: {n} images of 64x64 px, batch 1 vs {batch}")
    print("| scorer | batch 1 images/s | batch %d images/s | speed-up | forward passes (1 / %d) |" % (batch, batch))
    print("|---|---:|---:|---:|---:|")
    for name in ("clip", "aesthetic", "hpsv2", "pickscore"):
        res = []
        for b in (1, batch):
            db = workdir / f"tiny-{name}-{b}.db"
            res.append(throughput(lambda: parse_scorers(f"{name}:tiny-random", _ctx(db))[0], items, b))
        print(f"| {name}:tiny-random | {res[0][0]:.1f} | {res[1][0]:.1f} | {res[1][0] / res[0][0]:.1f}x | "
              f"{res[0][1]} / {res[1][1]} |")


def bench_full(n: int, batch: int, workdir: Path) -> None:
    items = noise_items(workdir / "full-imgs", n, 256)
    print(f"\n## throughput, real architectures with random weights: {n} images of 256x256 px, batch 1 vs {batch}")
    print("| scorer (architecture) | batch 1 images/s | batch %d images/s | speed-up |" % batch)
    print("|---|---:|---:|---:|")
    for name, arch in (("aesthetic", "ViT-L-14 + MLP head"), ("hpsv2", "open_clip ViT-H-14"),
                       ("pickscore", "transformers CLIP-H")):
        res = []
        scorer = _full_scorer(name, _ctx(workdir / f"full-{name}-1.db", "ViT-L-14:random"), workdir)
        for b in (1, batch):
            fresh = _ctx(workdir / f"full-{name}-{b}.db", "ViT-L-14:random").cache  # nothing cached
            scorer.ctx = type(scorer.ctx)(cache=fresh, clip=scorer.ctx.clip, device="cpu")
            if hasattr(scorer, "embedder"):
                scorer.embedder.cache = fresh
            res.append(throughput(None, items, b, scorer))
        del scorer
        print(f"| {name} ({arch}) | {res[0][0]:.2f} | {res[1][0]:.2f} | {res[1][0] / res[0][0]:.1f}x |", flush=True)


def bench_rescore(n: int, workdir: Path) -> None:
    from lorascope.evals.scorer_plugin import parse_scorers, score_items

    items = noise_items(workdir / "rescore-imgs", n, 32)
    spec = "clip:tiny-random,aesthetic:tiny-random,hpsv2:tiny-random,pickscore:tiny-random"
    db = workdir / "rescore.db"
    start = time.perf_counter()
    score_items(parse_scorers(spec, _ctx(db)), items, batch_size=32)
    first = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        scorers = parse_scorers(spec, _ctx(db))
        _, info = score_items(scorers, items, batch_size=32)
        times.append(time.perf_counter() - start)
        assert sum(info.computed.values()) == 0 and sum(s.loads for s in scorers) == 0
        assert sum(s.forward_passes for s in scorers) == 0
    print(f"\n## cached re-score: {n} images x 4 scorers (clip, aesthetic, hpsv2, pickscore; tiny)")
    print("| pass | seconds | model loads | forward passes |")
    print("|---|---:|---:|---:|")
    print(f"| first (all computed) | {first:.2f} | 4 | — |")
    print(f"| cached (best of 3; runs {', '.join(f'{t:.3f}' for t in times)}) | {min(times):.3f} | 0 | 0 |")


def bench_run_rescore(workdir: Path) -> None:
    """The same through `lorascope score --scorer ...`'s code path on a real run of 1,008
    images (tiny Z-Image pipeline): read run.db, cache look-ups, store values and gains, CLIP
    metrics, results.parquet export."""
    from lorascope.evals.pytest_plugin import SUITES_DIR
    from lorascope.evals.scoring import score_run_with
    from lorascope.harness.runner import run_suite
    from lorascope.harness.store import SharedCache
    from lorascope.harness.suite import parse_suite

    text = (SUITES_DIR / "tiny-styles.yaml").read_text()
    prompts = "\n".join(f"  - id: p{i}\n    text: test prompt number {i} with a lighthouse" for i in range(10))
    text = text.split("prompts:")[0] + "prompts:\n" + prompts + "\n" + (
        "seeds: [" + ", ".join(str(s) for s in range(12)) + "]\nsize: 32x32\nsteps: 1\n")
    text = text.replace("scales: [0, 0.5, 1.0]", "scales: [0.25, 0.5, 1.0, 1.5]").replace(
        "name: tiny-styles", "name: bench-scorers")
    run_dir = workdir / "run"
    t = time.perf_counter()
    run_suite(parse_suite(text, SUITES_DIR / "bench-scorers.yaml"), run_dir, progress=False,
              cache=SharedCache(workdir / "gen-cache"))
    gen = time.perf_counter() - t
    spec = "clip,aesthetic:tiny-random,hpsv2:tiny-random,pickscore:tiny-random"
    db = workdir / "run-rescore.db"
    t = time.perf_counter()
    first = score_run_with(run_dir, spec, "tiny-random", progress=False, cache_path=db)
    first_s = time.perf_counter() - t
    times = []
    for _ in range(3):
        t = time.perf_counter()
        again = score_run_with(run_dir, spec, "tiny-random", progress=False, cache_path=db)
        times.append(time.perf_counter() - t)
        assert again.forward_passes == 0 and sum(s.loads for s in again.scorers) == 0
    print(f"\n## cached re-score of a run: {first.clip.images} images x 4 scorers (run generated in {gen:.1f} s)")
    print("| step | seconds | forward passes |")
    print("|---|---:|---:|")
    print(f"| first score (models built) | {first_s:.2f} | {first.forward_passes} |")
    print(f"| re-score (best of 3; runs {', '.join(f'{x:.2f}' for x in times)}) | {min(times):.2f} | 0 |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--full-images", type=int, default=4)
    ap.add_argument("--rescore-images", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bench_tiny(args.images, args.batch, work)
        bench_rescore(args.rescore_images, work)
        bench_run_rescore(work)
        if args.full:
            bench_full(args.full_images, min(args.batch, args.full_images), work)


if __name__ == "__main__":
    main()
