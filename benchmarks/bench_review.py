"""`lorascope review` / `lorascope ratings` speed: the Bradley-Terry fit (point and bootstrap),
choosing the next pair, and votes over HTTP (N concurrent voters against a real uvicorn
process on loopback, each vote committed to run.db before its answer).

    .venv/bin/python benchmarks/bench_review.py [--voters 50] [--votes 20]

The run is made by the harness's runner with the in-process fake provider (real run.db,
real PNGs): 2 LoRAs x 5 scales x 5 prompts x 4 seeds + baselines = 220 images.
Results are recorded in benchmarks/RESULTS-review.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "review"))

SUITE = """
name: bench-review
providers: [fakeasync]
loras: [paint, ink]
scales: [0.25, 0.5, 0.75, 1.0, 1.5]
prompts:
  - {id: p1, text: a cat}
  - {id: p2, text: a dog}
  - {id: p3, text: a lighthouse}
  - {id: p4, text: a forest}
  - {id: p5, text: a city}
seeds: [1, 2, 3, 4]
size: 64x64
steps: 2
"""


def make_run(root: Path) -> Path:
    from lorascope.harness.runner import run_suite_async
    from lorascope.harness.store import SharedCache
    from lorascope.harness.suite import load_suite
    from tests.helpers.harness_fakes import CATALOGUE, lookup

    (root / "loras.yaml").write_text(CATALOGUE)
    (root / "suite.yaml").write_text(SUITE)
    asyncio.run(run_suite_async(load_suite(root / "suite.yaml"), root / "run", provider_lookup=lookup,
                                progress=False, cache=SharedCache(root / "cache")))
    return root / "run"


def bench_fit() -> dict[str, str]:
    from lorascope.evals.ratings import bt_log_strengths, fit_group
    from lorascope.harness.ratings import Vote
    import random

    rng = random.Random(0)
    scales = ["", "0.25", "0.5", "0.75", "1", "1.5"]
    votes = []
    for i in range(300):
        a, b = rng.sample(scales, 2)
        votes.append(Vote(vote_id=f"v{i}", rater="r", created_at=0.0, provider="p", lora="l", prompt_id="x", seed=1,
                          left_cell="a", left_index=0, left_sha256="a" * 64, left_scale=a, right_cell="b",
                          right_index=0, right_sha256="b" * 64, right_scale=b,
                          choice=rng.choice(["left", "right", "right", "tie"])))
    outcomes = [(v.left_scale, v.right_scale, v.choice) for v in votes]
    t = time.perf_counter()
    for _ in range(200):
        bt_log_strengths(outcomes, scales, prior=1.0)
    point = (time.perf_counter() - t) / 200
    t = time.perf_counter()
    fit_group(votes, resamples=1000)
    boot = time.perf_counter() - t
    return {"BT point fit (6 scales, 300 votes)": f"{point * 1000:.2f} ms",
            "fit with 1,000 bootstrap resamples (same votes)": f"{boot:.2f} s"}


def bench_choose(run: Path) -> dict[str, str]:
    from lorascope.harness.ratings import Vote
    from lorascope.reports.review_server import load_state

    state = load_state(run)
    votes = []
    t = time.perf_counter()
    n = 0
    for r in range(50):
        for i in range(20):
            p = state.chooser.choose(votes, f"r{r}")
            votes.append(Vote(vote_id=f"{r}-{i}", rater=f"r{r}", created_at=0.0, provider=p.slot.provider,
                              lora=p.slot.lora, prompt_id=p.slot.prompt_id, seed=p.slot.seed, options=p.slot.options,
                              left_cell=p.left.cell_id, left_index=p.left.index, left_sha256=p.left.sha256,
                              left_scale=p.left.scale, right_cell=p.right.cell_id, right_index=p.right.index,
                              right_sha256=p.right.sha256, right_scale=p.right.scale, choice="left"))
            n += 1
    per = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for _ in range(50):
        state.chooser.choose(votes, "r0")
    at_1000 = (time.perf_counter() - t) / 50
    state.ratings.close()
    return {"choose next pair, mean over votes 0..1,000": f"{per * 1000:.2f} ms",
            "choose next pair with 1,000 votes stored": f"{at_1000 * 1000:.2f} ms",
            "slots / pairs in the run": f"{len(state.chooser.slots)} / {sum(len(s.pairs()) for s in state.chooser.slots)}"}


def bench_http(run: Path, voters: int, per_voter: int) -> dict[str, str]:
    import httpx

    from review_helpers import start_server

    server = start_server(run)
    latencies: list[float] = []

    async def voter(client: httpx.AsyncClient, n: int) -> None:
        for i in range(per_voter):
            t0 = time.perf_counter()
            pair = (await client.get("/api/next", params={"rater": f"v{n}"})).json()["pair"]
            r = await client.post("/api/vote", json={"vote_id": f"h{n}-{i}", "rater": f"v{n}", "slot": pair["slot"],
                                                     "left": pair["left"]["sha"], "right": pair["right"]["sha"],
                                                     "choice": "left"})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    async def main() -> float:
        async with httpx.AsyncClient(base_url=server.base, limits=httpx.Limits(max_connections=voters + 10),
                                     timeout=120) as client:
            t = time.perf_counter()
            await asyncio.gather(*(voter(client, n) for n in range(voters)))
            return time.perf_counter() - t

    try:
        wall = asyncio.run(main())
    finally:
        server.stop(signal.SIGKILL)
    conn = sqlite3.connect(run / "run.db")
    rows = conn.execute("SELECT COUNT(*) FROM ratings WHERE vote_id LIKE 'h%'").fetchone()[0]
    ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    latencies.sort()
    total = voters * per_voter
    return {
        f"{voters} voters x {per_voter} votes over HTTP: wall time": f"{wall:.1f} s ({total / wall:.0f} votes/s)",
        "next pair + vote round trip, median / p95": (f"{statistics.median(latencies) * 1000:.0f} / "
                                                      f"{latencies[int(0.95 * len(latencies))] * 1000:.0f} ms"),
        "rows stored / integrity_check": f"{rows} / {ok}",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voters", type=int, default=50)
    parser.add_argument("--votes", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LORASCOPE_CACHE"] = str(Path(tmp) / "ucache")
        run = make_run(Path(tmp))
        figures = {**bench_fit(), **bench_choose(run), **bench_http(run, args.voters, args.votes)}
    print(f"machine: {platform.processor() or platform.machine()}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}; python {platform.python_version()}")
    print("| figure | value |\n|---|---|")
    for k, v in figures.items():
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
