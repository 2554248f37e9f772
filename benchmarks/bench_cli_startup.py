"""How long `lorascope registry list` and `lorascope --help` take to start (goal: median < 0.5 s, issue 10).

Runs each command N times in fresh subprocesses (the way a user runs them) and prints the
median, min and max wall time, plus whether any heavy library (torch, diffusers, transformers,
open_clip, pandas) got imported, read from `python -X importtime`. Exits 1 if a median misses
the goal or a heavy library is imported.

    python benchmarks/bench_cli_startup.py [-n 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.5  # issue 10 (was 1.0, issue 2)
HEAVY = ("torch", "diffusers", "transformers", "open_clip", "pandas")
ENTRY = "from lorascope.cli import main; import sys; sys.argv = ['lorascope', *sys.argv[1:]]; main()"
COMMANDS = {
    "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
    "lorascope --help": [sys.executable, "-c", ENTRY, "--help"],
    "lorascope registry list": [sys.executable, "-c", ENTRY, "registry", "list"],
    "lorascope registry validate": [sys.executable, "-c", ENTRY, "registry", "validate"],
}


def timed(cmd: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall times and CPU times (user + system) of `runs` fresh processes. CPU time hardly
    depends on how busy a shared machine is; wall time does (see RESULTS-cli-startup.md)."""
    env = {**os.environ, "COLUMNS": "120"}
    times, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return times, cpus


def heavy_imports(cmd: list[str]) -> list[str]:
    done = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=ROOT, capture_output=True, text=True)
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return [m for m in HEAVY if m in names]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'command':<38} {'median':>8} {'min':>8} {'max':>8} {'cpu med':>8}  heavy imports")
    ok = True
    for label, cmd in COMMANDS.items():
        timed(cmd, 1)  # warm the page cache and .pyc files
        times, cpus = timed(cmd, args.runs)
        heavy = heavy_imports(cmd) if "lorascope" in label else []
        median = statistics.median(times)
        if "lorascope" in label and (median >= GOAL_S or heavy):
            ok = False
        print(f"{label:<38} {median:>7.3f}s {min(times):>7.3f}s {max(times):>7.3f}s {statistics.median(cpus):>7.3f}s"
              f"  {', '.join(heavy) or '-'}")
    print(f"goal: median < {GOAL_S:g} s and no heavy imports -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
