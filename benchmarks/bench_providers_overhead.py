"""Client-side overhead of the hosted providers, measured against the loopback fakes.

What it answers: how many generations per second one asyncio loop can drive through each
protocol when the provider itself costs nothing (latency 0), i.e. the ceiling our plumbing
puts on a grid, and how long header-only image inspection takes. Real providers take
seconds per image, so anything in the hundreds per second here means the client is not the
bottleneck.

    .venv/bin/python benchmarks/bench_providers_overhead.py [N] [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorascope.harness.models import GenerationRequest, LoraSpec  # noqa: E402
from lorascope.harness.providers import provider_class  # noqa: E402
from lorascope.harness.providers._images import to_image  # noqa: E402
from tests.fakes import FAKES, TEST_KEY  # noqa: E402
from tests.fakes.images import make_image  # noqa: E402

LORA = LoraSpec(id="x", scale=0.8, url="https://example.org/x.safetensors")


async def drive(name: str, n: int, concurrency: int) -> dict[str, float]:
    fake = FAKES[name](key=TEST_KEY).start()
    provider = provider_class(name)({"api_key": TEST_KEY, "base_url": fake.url, "poll_interval_s": 0.01,
                                     "concurrency": concurrency})
    gate = asyncio.Semaphore(concurrency)
    totals: list[float] = []

    async def one(seed: int) -> None:
        request = GenerationRequest(prompt="a fox", width=512, height=512, seed=seed + 1, loras=(LORA,))
        async with gate:
            result = await provider.generate(request)
        totals.append(result.timings.total_s)

    started = time.perf_counter()
    async with provider:
        await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - started
    fake.stop()
    totals.sort()
    return {"per_s": n / wall, "p50_ms": statistics.median(totals) * 1000,
            "p95_ms": totals[int(0.95 * (len(totals) - 1))] * 1000, "requests": len(fake.requests)}


def image_inspection(repeats: int = 200) -> float:
    data = make_image("png", 1024, 1024, 7)
    started = time.perf_counter()
    for _ in range(repeats):
        to_image("bench", data, "image/png")
    return (time.perf_counter() - started) / repeats * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    print(f"{n} generations per provider, concurrency {concurrency}, 512x512 PNG, loopback fakes (latency 0)")
    print(f"{'provider':10} {'gen/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'HTTP requests':>14}")
    for name in ("fal", "novita", "highway", "aimlapi"):
        stats = asyncio.run(drive(name, n, concurrency))
        print(f"{name:10} {stats['per_s']:8.1f} {stats['p50_ms']:8.1f} {stats['p95_ms']:8.1f} {stats['requests']:14d}")
    print(f"header-only inspection of a 1024x1024 PNG: {image_inspection():.0f} us")


if __name__ == "__main__":
    main()
