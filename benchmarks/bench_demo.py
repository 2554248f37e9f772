"""`lorascope demo` wall time, as a user runs it: a fresh process, a fresh output folder and
a fresh cache (nothing reused), then the same command again (everything reused: resume).

Prints figures; results are recorded in benchmarks/RESULTS-demo.md.
Run: .venv/bin/python benchmarks/bench_demo.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LORASCOPE = Path(sys.executable).with_name("lorascope")


def run(out: Path, env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run([str(LORASCOPE), "demo", "--out", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"lorascope demo failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return wall, proc.stdout


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    env = {**os.environ, "LORASCOPE_CACHE": str(work / "cache"), "COLUMNS": "120"}
    try:
        load = os.getloadavg()
        cold, out = run(work / "demo", env)
        warm, _ = run(work / "demo", env)
        stages = [line for line in out.splitlines() if line.startswith(("demo finished", "report:", "run:", "scored"))]
        print(f"cpu cores: {os.cpu_count()}; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"lorascope demo, cold (fresh folder and cache, new process): {cold:.1f} s")
        print(f"lorascope demo, again (resumes; nothing regenerated or re-embedded): {warm:.1f} s")
        for line in stages:
            print(f"  cold: {line}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
