"""What issue 19's checks cost: hashing stored images before trusting them (a run's start, a
scoring, a comparison, a report), and loading catalogues/suites within YAML limits.

    .venv/bin/python benchmarks/bench_integrity.py [--images 300] [--kib 1024] [--repeat 3]

Images are random bytes of the given size in a temporary folder (hashing does not care what
they hold). "first check" reads every file (cold process, warm page cache); "again" is the
same process re-checking (the size/mtime memo: no read). The YAML figures compare
`safe_yaml.load` with a plain ruamel round-trip load of the project's loras.yaml, and time
the refusal of a billion-laughs file and a 1 MB line of '['.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_images(n: int, kib: int, repeat: int) -> None:
    from lorascope.harness import store

    with tempfile.TemporaryDirectory() as tmp:
        items = []
        for i in range(n):
            data = os.urandom(kib * 1024)
            path = Path(tmp) / f"{i}.png"
            path.write_bytes(data)
            items.append((path, hashlib.sha256(data).hexdigest()))
        firsts = []
        for _ in range(repeat):
            store._verified.clear()
            started = time.perf_counter()
            assert all(store.image_problem(p, s) is None for p, s in items)
            firsts.append(time.perf_counter() - started)
        again = _best(lambda: all(store.image_problem(p, s) is None for p, s in items), repeat)
        total_mb = n * kib / 1024
        first = min(firsts)
        print(f"images: {n} x {kib} KiB ({total_mb:.0f} MiB)")
        print(f"  first check: {first:.3f} s ({first / n * 1000:.2f} ms/image, {total_mb / first:.0f} MiB/s;"
              f" median of {repeat}: {statistics.median(firsts):.3f} s)")
        print(f"  again (memo): {again * 1000:.1f} ms ({again / n * 1e6:.1f} us/image)")


def bench_yaml(repeat: int) -> None:
    import io

    from ruamel.yaml import YAML

    from lorascope.registry import safe_yaml

    text = (ROOT / "loras.yaml").read_text()
    plain = _best(lambda: YAML(typ="rt").load(io.StringIO(text)), repeat)
    safe = _best(lambda: safe_yaml.load(text), repeat)
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb = "\n".join(lines)

    def refuse(t: str) -> None:
        try:
            safe_yaml.load(t)
        except safe_yaml.YamlLimitError:
            return
        raise AssertionError("not refused")

    print(f"yaml: loras.yaml ({len(text):,} bytes): plain rt load {plain * 1000:.0f} ms, safe_yaml.load {safe * 1000:.0f} ms")
    print(f"  billion laughs refused in {_best(lambda: refuse(bomb), repeat) * 1000:.1f} ms")
    deep = "a: " + "[" * 1_000_000
    print(f"  1 MB of '[' refused in {_best(lambda: refuse(deep), repeat):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--kib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average {load:.1f}")
    bench_images(args.images, args.kib, args.repeat)
    bench_yaml(args.repeat)


if __name__ == "__main__":
    main()
