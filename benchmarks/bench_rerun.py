"""Re-running a finished 1,000-cell run: goal under 2 s end to end (`lorascope run` as a
process, Python start-up included) and zero requests at the provider.

The run is first filled through the real AI/ML API provider against its loopback fake (in
another process, recording every request); then the same command runs again and the
server's request count must not move. Also times a second run folder answered entirely
from the shared cache.

    .venv/bin/python benchmarks/bench_rerun.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes import TEST_KEY  # noqa: E402

LORASCOPE = Path(sys.executable).parent / "lorascope"


def suite_text() -> str:
    prompts = "\n".join(f"  - {{id: p{i}, text: a test prompt about object number {i}}}" for i in range(20))
    return (
        f"name: rerun-bench\ncatalogue: {ROOT / 'loras.yaml'}\n"
        "providers:\n  - aimlapi: {concurrency: 4}\n"  # the stdlib fake's listen backlog is small
        "loras: [classic-painting, coloring-book, childrens-drawings]\nscales: [0.5, 0.8, 1.0]\n"
        f"prompts:\n{prompts}\nseeds: [1, 2, 3, 4, 5]\nsize: 512x512\nsteps: 8\n"
    )


def requests_at(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if line.strip()) if log.exists() else 0


def main() -> None:
    print(f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        log = tmp_path / "requests.jsonl"
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.run_server", "--protocol", "aimlapi", "--port", "0",
             "--key", TEST_KEY, "--record", str(log)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            env = dict(os.environ, AIMLAPI_KEY=TEST_KEY, LORASCOPE_AIMLAPI_URL=server.stdout.readline().strip(),
                       LORASCOPE_CACHE=str(tmp_path / "cache"))
            suite = tmp_path / "suite.yaml"
            suite.write_text(suite_text())

            def run(out: str) -> float:
                t0 = time.perf_counter()
                proc = subprocess.run([str(LORASCOPE), "run", str(suite), "--out", str(tmp_path / out),
                                       "--no-progress"], env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
                return wall

            fill = run("run")
            filled = requests_at(log)
            cells = int(subprocess.run(
                [sys.executable, "-c", "import pandas as pd, sys; print(len(pd.read_parquet(sys.argv[1])))",
                 str(tmp_path / "run" / "results.parquet")], capture_output=True, text=True).stdout)
            print(f"fill:  {cells} cells, {filled} requests at the server, {fill:.2f} s")
            timings = [run("run") for _ in range(3)]
            after = requests_at(log)
            print(f"re-run of the finished run (3 times): {', '.join(f'{t:.2f} s' for t in timings)}; "
                  f"requests sent: {after - filled}  (goal < 2 s, 0 requests)")
            cached = run("run-from-cache")
            print(f"new run folder from the shared cache: {cached:.2f} s; requests sent: {requests_at(log) - after}")
            startup = time.perf_counter()
            subprocess.run([str(LORASCOPE), "--help"], capture_output=True)
            print(f"(for scale: `lorascope --help` takes {time.perf_counter() - startup:.2f} s)")
            print(json.dumps({"cells": cells, "rerun_s": min(timings), "rerun_requests": after - filled}))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
