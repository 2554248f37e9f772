"""Harness overhead: 400 cells through the runner at concurrency 32 against a provider with
a fixed 0.25 s latency. Ideal wall time = cells x latency / concurrency; the ratio of the
measured wall time to it is the harness's overhead (goal: <= 1.10). Also CPU per cell.

Two providers stand in:
  in-process  a Provider subclass that sleeps 0.25 s and returns a small real PNG: the
              runner, store (write-ahead commits), image checks and writes, cache, progress;
  loopback    the real AI/ML API provider (httpx) against the loopback fake of its protocol
              in another process (0.25 s per call), adding HTTP and the image download.

    .venv/bin/python benchmarks/bench_harness_overhead.py
"""

from __future__ import annotations

import asyncio
import io
import os
import platform
import resource
import subprocess
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
from lorascope.harness.runner import run_suite_async  # noqa: E402
from lorascope.harness.suite import parse_suite  # noqa: E402

LATENCY = 0.25
CELLS = 400
CONCURRENCY = 32


class SleepProvider(Provider):
    name: ClassVar[str] = "sleepy"
    asynchronous: ClassVar[bool] = True

    def validate(self, request):
        return []

    def endpoint(self, request):
        return "sleepy"

    def estimate(self, request):
        return Estimate(cost=Cost(usd=0.001, source="estimated"), seconds=LATENCY)

    async def generate(self, request: GenerationRequest, on_submitted=None) -> GenerationResult:
        if on_submitted:
            await on_submitted(f"task-{request.seed}-{abs(hash(request.prompt))}")
        await asyncio.sleep(LATENCY)
        data = IMAGES[(request.prompt, request.seed)]
        return GenerationResult(provider=self.name, images=[GeneratedImage(data=data, format="png",
                                width=64, height=64)], seed=request.seed, timings=Timings(total_s=LATENCY),
                                cost=Cost(usd=0.001, source="billed"))


def _png(i: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (seed % 256, i % 256, 9)).save(buf, "PNG")
    return buf.getvalue()


#: made before timing, so the fake provider's own work is not counted as harness overhead
IMAGES = {(f"prompt number {i}", seed): _png(i, seed) for i in range(20) for seed in range(1, CELLS // 20 + 1)}


def suite_text(provider: str, extra: str = "") -> str:
    prompts = "\n".join(f"  - {{id: p{i}, text: prompt number {i}}}" for i in range(20))
    seeds = list(range(1, CELLS // 20 + 1))
    return (f"name: bench\nproviders:\n  - {provider}: {{concurrency: {CONCURRENCY}{extra}}}\n"
            f"prompts:\n{prompts}\nseeds: {seeds}\nsize: 512x512\nsteps: 8\n")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def timed(suite, out: Path, **kw) -> tuple[float, float, object]:
    c0, t0 = cpu_s(), time.perf_counter()
    summary = await run_suite_async(suite, out, progress=kw.pop("progress", False), handle_sigint=False, **kw)
    return time.perf_counter() - t0, cpu_s() - c0, summary


def report(label: str, wall: float, cpu: float, summary) -> None:
    ideal = CELLS * LATENCY / CONCURRENCY
    sent = sum(p.sent for p in summary.providers.values())
    ok = sum(p.succeeded for p in summary.providers.values())
    print(f"{label:<44} cells={CELLS} sent={sent} ok={ok} wall={wall:.3f}s ideal={ideal:.3f}s "
          f"ratio={wall / ideal:.3f} cpu/cell={cpu / CELLS * 1000:.2f}ms")


async def pure_asyncio_floor() -> float:
    queue = list(range(CELLS))

    async def worker() -> None:
        while queue:
            queue.pop()
            await asyncio.sleep(LATENCY)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - t0


def main() -> None:
    print(f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["LORASCOPE_CACHE"] = str(tmp_path / "cache")
        suite = parse_suite(suite_text("sleepy"))
        lookup = lambda name: SleepProvider  # noqa: E731
        # the first run in a process also pays one-time imports (pandas/pyarrow for the export)
        wall, cpu, summary = asyncio.run(timed(suite, tmp_path / "cold", provider_lookup=lookup, fresh=True))
        report("in-process, cold (first in process)", wall, cpu, summary)
        floor = asyncio.run(pure_asyncio_floor())
        print(f"{'pure asyncio floor on this machine':<34} wall={floor:.3f}s ratio={floor / (CELLS * LATENCY / CONCURRENCY):.3f}"
              "  (32 workers sleeping 0.25 s, 400 items: 13 rounds)")
        for progress in (False, True):
            runs = [asyncio.run(timed(suite, tmp_path / f"inproc-{progress}-{i}", progress=progress,
                                      provider_lookup=lookup, fresh=True)) for i in range(3)]
            runs.sort(key=lambda r: r[0])
            wall, cpu, summary = runs[1]
            report(f"in-process, progress={'on' if progress else 'off'} (median of 3)", wall, cpu, summary)

        sys.path.insert(0, str(ROOT))
        from tests.fakes import TEST_KEY

        server = subprocess.Popen([sys.executable, "-m", "tests.fakes.run_server", "--protocol", "aimlapi",
                                   "--port", "0", "--latency", str(LATENCY), "--key", TEST_KEY],
                                  cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            os.environ["LORASCOPE_AIMLAPI_URL"] = server.stdout.readline().strip()
            os.environ["AIMLAPI_KEY"] = TEST_KEY
            suite = parse_suite(suite_text("aimlapi"))
            wall, cpu, summary = asyncio.run(timed(suite, tmp_path / "loopback", fresh=True))
            report("loopback HTTP (aimlapi protocol)", wall, cpu, summary)
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
