"""How well `latency_s` measures a hosted provider: measured median vs the provider's real
latency, with the adaptive poll schedule (first poll 0.1 s after submitting, then 1/8 of the
elapsed time) and, for reference, a 1 s first poll (the old default, which read a 0.2 s and a
0.5 s provider both as ~1.2 s).

Drives the real provider classes against the loopback fakes (Novita's task protocol, fal's
queue), N generations per latency at concurrency 4, and counts the status polls per task.

    .venv/bin/python benchmarks/bench_poll_latency.py [N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from lorascope.harness.models import GenerationRequest  # noqa: E402
from lorascope.harness.providers import provider_class  # noqa: E402
from tests.fakes import FAKES, TEST_KEY  # noqa: E402

LATENCIES = (0.2, 0.3, 0.5, 1.5, 3.0)
POLL_ROUTE = {"novita": "result", "fal": "status"}


async def drive(name: str, latency: float, n: int, first_poll: float | None) -> tuple[float, float]:
    """(median measured seconds, polls per task) for `n` generations at `latency`."""
    fake = FAKES[name](key=TEST_KEY, latency=latency).start()
    config = {"api_key": TEST_KEY, "base_url": fake.url, "concurrency": 4}
    if first_poll is not None:
        config["poll_interval_s"] = first_poll
    provider = provider_class(name)(config)
    gate = asyncio.Semaphore(4)

    async def one(seed: int) -> float:
        request = GenerationRequest(prompt="a fox", width=256, height=256, seed=seed + 1, steps=8)
        async with gate:
            result = await provider.generate(request)
        return result.timings.total_s

    try:
        totals = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await provider.aclose()
        fake.stop()
    return statistics.median(totals), len(fake.hits(POLL_ROUTE[name])) / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    from _machine import machine

    print(machine())
    print(f"{n} generations per row, concurrency 4\n")
    print("| provider | real latency s | measured median s (adaptive) | polls/task | measured median s (1 s first poll) |")
    print("|---|---|---|---|---|")
    for name in ("novita", "fal"):
        for latency in LATENCIES:
            adaptive, polls = asyncio.run(drive(name, latency, n, None))
            fixed, _ = asyncio.run(drive(name, latency, n, 1.0))
            print(f"| {name} | {latency:.1f} | {adaptive:.3f} | {polls:.1f} | {fixed:.3f} |")


if __name__ == "__main__":
    main()
