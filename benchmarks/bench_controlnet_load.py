"""What the local provider's ControlNet file handling costs (issue 14): the content hash that
names a single-file ControlNet in the fingerprint, and the checks run before its weights
are read (header, config, keys/shapes against the config).

    .venv/bin/python benchmarks/bench_controlnet_load.py [--mib 1024] [--repeat 3]

The hash is timed on a file of random bytes (sha256 does not care what they hold; page cache
warm after the write), first in a process and again (the size/mtime/inode memo). The checks
are timed on the tiny ControlNet written as one file, and `check_fits` also on a header of
real size (a v1-like config: dim 3840, 6 control blocks, 2 refiner blocks; the shapes come
from a meta-device model, no weights) to show it does not grow with the weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from _machine import machine

    from lorascope.harness.providers import controlnet_weights as cw
    from lorascope.harness.providers.tiny_controlnet import write_config, write_single_file

    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.safetensors"
        with open(big, "wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(1024 * 1024))

        def first() -> None:
            cw._SHA_CACHE.clear()
            cw.file_identity(big)

        cold = _best(first, args.repeat)
        memo = _best(lambda: cw.file_identity(big), args.repeat)
        print(f"identity (sha256) of {args.mib} MiB: {cold:.2f} s ({args.mib / cold:.0f} MiB/s); memo {memo * 1e6:.0f} us")
        big.unlink()

        tiny = write_single_file(Path(tmp) / "tiny.safetensors")
        folder = write_config(Path(tmp) / "cfg")

        def checks() -> None:
            shapes = cw.header(tiny)
            cw.check_layout(tiny, shapes)
            config, found = cw.load_config(tiny, shapes, str(folder), True)
            cw.check_fits(tiny, shapes, config, found)

        print(f"pre-load checks, tiny file (header + config + fit): {_best(checks, args.repeat) * 1000:.1f} ms")

        from accelerate import init_empty_weights
        from diffusers import ZImageControlNetModel

        real = {"control_layers_places": [0, 5, 10, 15, 20, 25], "control_refiner_layers_places": [0, 1],
                "control_in_dim": 16, "add_control_noise_refiner": None}
        with init_empty_weights():
            model = ZImageControlNetModel(**real)
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        params = sum(v.numel() for v in model.state_dict().values())
        config = dict(model.config)
        fit = _best(lambda: cw.check_fits(Path("real.safetensors"), shapes, config, "v1-like"), args.repeat)
        print(f"check_fits on a real-size header ({len(shapes)} tensors, {params / 1e9:.2f} B params): {fit * 1000:.0f} ms")


if __name__ == "__main__":
    main()
