"""The Ray executor on this machine's CPUs: throughput with 1 and 2 workers against the
in-process executor, and the driver's overhead per cell.

Two providers:
  tiny     the real local provider (diffusers' ZImagePipeline, tiny random weights, 64x64,
           8 steps) over a grid of baseline + 2 LoRA files x 2 scales, 4 prompts, 2 seeds
           (40 cells): in-process, Ray with 1 and 2 one-thread workers, and 2 workers with
           torch's default threads (ray2d, 10 cells: it oversubscribes the cores);
  instant  a provider that returns a fixed PNG at once, baseline-only grid (200 cells): all
           that is left is the driver (write-ahead commits, image checks and writes, Ray's
           round trip), so wall time / cells is the driver's overhead per cell.

Ray is started once (num_cpus = this machine's CPUs). Steady-state cells/s = cells / the
workers' wall time after they started (pipeline load included, Ray start and actor start
not); "run wall" is the whole `run_suite` call.

    .venv/bin/python benchmarks/bench_ray.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from lorascope.harness.models import Cost, Estimate, GeneratedImage, GenerationRequest, GenerationResult, Timings  # noqa: E402
from lorascope.harness.providers.base import Provider  # noqa: E402
from lorascope.harness.ray_settings import ExecutorSettings  # noqa: E402
from lorascope.harness.runner import run_suite_async  # noqa: E402
from lorascope.harness.store import SharedCache  # noqa: E402
from lorascope.harness.suite import load_suite  # noqa: E402


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


class InstantProvider(Provider):
    """Answers at once with a fixed 8x8 PNG: a run through it measures the driver alone."""

    name: ClassVar[str] = "instant"
    config_model: ClassVar[type] = ExecutorSettings
    batch_seeds: ClassVar[bool] = False  # one request per call, in-process and on Ray alike

    def validate(self, request: GenerationRequest) -> list[str]:
        return []

    def endpoint(self, request: GenerationRequest) -> str:
        return "instant"

    def estimate(self, request: GenerationRequest) -> Estimate:
        return Estimate(cost=Cost(usd=0.0, source="free"), seconds=0.0)

    async def generate(self, request: GenerationRequest, on_submitted=None) -> GenerationResult:
        return (await self.generate_batch([request]))[0]

    async def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        data = _png()
        return [GenerationResult(provider=self.name, images=[GeneratedImage(data=data, format="png", width=8, height=8)],
                                 seed=r.seed, timings=Timings(total_s=0.0), cost=Cost(usd=0.0, source="free"))
                for r in requests]


def _lookup(name: str) -> type:
    if name == "instant":
        return InstantProvider
    from lorascope.harness.providers import provider_class

    return provider_class(name)


def project(root: Path, prompts: int, seeds: int, instant_cells: int) -> None:
    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.providers.local import DiffusersProvider

    transformer = DiffusersProvider({"model": "tiny-random"}).load_pipeline().transformer
    entries = ""
    for seed, name in ((3, "alpha"), (4, "beta")):
        write_lora(root / "loras" / f"{name}.safetensors", transformer, seed=seed)
        entries += (f"  - id: {name}\n    name: {name}\n    source: {{path: loras/{name}.safetensors}}\n"
                    "    kind: style\n    scale: {recommended: 1.0, range: [0.0, 2.0]}\n")
    (root / "loras.yaml").write_text("version: 1\nloras:\n" + entries)
    prompt_list = ", ".join(f"prompt number {i}" for i in range(prompts))
    seed_list = ", ".join(str(s) for s in range(1, seeds + 1))
    for label, settings in (("local", "{model: tiny-random}"),
                            ("ray1", "{model: tiny-random, executor: ray, workers: 1, threads_per_worker: 1}"),
                            ("ray2", "{model: tiny-random, executor: ray, workers: 2, threads_per_worker: 1}"),
                            ("ray2d", "{model: tiny-random, executor: ray, workers: 2}")):
        # ray2d (torch's default threads in each worker) oversubscribes the cores: a 10-cell grid
        grid = f"prompts: [{prompt_list}]\nseeds: [{seed_list}]\n" if label != "ray2d" else \
            "prompts: [prompt number 0, prompt number 1]\nseeds: [1]\n"
        (root / f"{label}.yaml").write_text(
            f"name: {label}\nproviders:\n  - diffusers: {settings}\nloras: [alpha, beta]\nscales: [0.5, 1.0]\n"
            f"{grid}size: 64x64\nsteps: 8\n")
    instant_seeds = ", ".join(str(s) for s in range(1, instant_cells + 1))
    for label, settings in (("instant-local", "{}"), ("instant-ray1", "{executor: ray, workers: 1}")):
        (root / f"{label}.yaml").write_text(
            f"name: {label}\nproviders:\n  - instant: {settings}\nprompts: [a cube]\nseeds: [{instant_seeds}]\n"
            "size: 64x64\nsteps: 8\n")


async def run(root: Path, label: str) -> dict[str, float]:
    out = root / "runs" / label
    cache = SharedCache(root / "cache" / label)  # each run its own: nothing answered from another's images
    started = time.perf_counter()
    summary = await run_suite_async(load_suite(root / f"{label}.yaml"), out, progress=False, handle_sigint=False,
                                    cache=cache, provider_lookup=_lookup)
    wall = time.perf_counter() - started
    assert summary.exit_code == 0, (summary.fatal, summary.notes)
    cells = sum(p.succeeded for p in summary.providers.values())
    row = {"cells": cells, "run_wall": wall}
    if summary.workers:
        workers = list(summary.workers.values())
        steady = max(w.wall_s for w in workers)
        row.update(workers=len(workers), steady=steady, busy=sum(w.busy_s for w in workers),
                   loads=sum(w.lora_loads for w in workers))
    else:
        row.update(workers=0, steady=wall, busy=float("nan"), loads=float("nan"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller grids (checks the script)")
    args = parser.parse_args()
    prompts, seeds, instant = (2, 1, 40) if args.quick else (4, 2, 200)

    import ray

    from benchmarks._machine import machine

    print(machine())
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project(root, prompts, seeds, instant)
        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        print(f"ray.init: {time.perf_counter() - started:.1f} s")
        try:
            rows = {}
            for label in ("local", "ray1", "ray2", "ray2d", "instant-local", "instant-ray1"):
                rows[label] = asyncio.run(run(root, label))
        finally:
            ray.shutdown()
    print(f"load average after: {os.getloadavg()}")
    print()
    print("| run | workers | cells | run wall s | steady s | steady cells/s | busy s (sum) | LoRA loads |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        print(f"| {label} | {r['workers']} | {r['cells']} | {r['run_wall']:.1f} | {r['steady']:.1f} | "
              f"{r['cells'] / r['steady']:.2f} | {r['busy']:.1f} | {r['loads']} |")
    one = rows["instant-ray1"]
    local = rows["instant-local"]
    print()
    print(f"driver overhead per cell, Ray (1 worker, instant provider): {1000 * one['steady'] / one['cells']:.1f} ms "
          f"(in-process executor: {1000 * local['run_wall'] / local['cells']:.1f} ms)")
    per_image = rows["ray1"]["busy"] / rows["ray1"]["cells"]
    print(f"tiny model, seconds per image inside a 1-thread worker: {per_image:.3f} s")


if __name__ == "__main__":
    main()
