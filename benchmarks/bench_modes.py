"""What image-conditioned grids add to a run's own work (issue 14), with no provider:

- reading a suite's inputs (`load_inputs`: stat, read, Pillow header + verify, sha256) per
  input size;
- the fal body of an img2img request with a local input (a data URI): the first build
  (base64 of the file) and every later one (memoised per input);
- the fingerprint of an img2img request (the input is hashed once, when read);
- the tiny diffusers model per image: text-to-image vs img2img (strength 0.6) vs ControlNet,
  64 px, 8 steps (the input's VAE encode is the difference).

    python benchmarks/bench_modes.py [--sizes 512,1024,2048] [-n 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _photo(side: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(side)
    pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)  # noise: the worst case for PNG size
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()
    from benchmarks._machine import machine
    from lorascope.harness.fingerprint import fingerprint
    from lorascope.harness.input_images import load_inputs
    from lorascope.harness.models import GenerationRequest, LoraSpec
    from lorascope.harness.providers.fal import FalProvider
    from lorascope.harness.suite import parse_suite

    print(machine())
    print("| input (PNG, noise) | file | load_inputs | fal body, first | fal body, again | fingerprint |")
    print("|---|---|---|---|---|---|")
    fal = FalProvider()
    lora = (LoraSpec(id="x", scale=0.8, url="https://example.org/x.safetensors"),)
    for side in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            data = _photo(side)
            (Path(tmp) / "in.png").write_bytes(data)
            text = (f"name: b\nmode: img2img\nproviders: [fal]\nprompts: [x]\n"
                    f"images: [{{id: a, image: in.png}}]\n")
            suite = parse_suite(text, Path(tmp) / "suite.yaml")
            load_ms = _median_ms(lambda: load_inputs(suite), args.n)
            (item,), problems = load_inputs(suite)
            assert not problems, problems
            request = GenerationRequest(prompt="p", width=1024, height=1024, seed=1, loras=lora,
                                        init_image=item.init, strength=0.6)
            started = time.perf_counter()
            fal.body(request)
            first_ms = (time.perf_counter() - started) * 1000
            again_ms = _median_ms(lambda: fal.body(request), args.n)
            fp_us = _median_ms(lambda: fingerprint("fal", "e", "", request), args.n) * 1000
            print(f"| {side}x{side} | {len(data) / 2**20:.1f} MiB | {load_ms:.1f} ms | {first_ms:.1f} ms | "
                  f"{again_ms:.3f} ms | {fp_us:.0f} us |")

    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random", "controlnet": "tiny-random"})
    provider.load_pipeline()
    init = item.init
    print("\n| tiny diffusers, 64 px, 8 steps | ms per image (median) |\n|---|---|")
    for label, extra in (("text-to-image", {}), ("img2img, strength 0.6", {"init_image": init, "strength": 0.6}),
                         ("ControlNet, scale 0.75", {"control_image": init})):
        request = GenerationRequest(prompt="a lighthouse", width=64, height=64, seed=1, steps=8, **extra)
        asyncio.run(provider.generate(request))  # builds the mode's pipeline once
        ms = _median_ms(lambda: asyncio.run(provider.generate(request)), args.n)
        print(f"| {label} | {ms:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
