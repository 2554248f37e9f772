"""What shipping a LoRA file to a Ray worker costs (ship_loras), against reading it from disk.

For a 100 MB and a 400 MB file of random bytes (realistic LoRA sizes), on one local worker:
  disk      the worker reads the file at its path and hashes it (what it does to accept a file
            it can read: `lora_shipping.find_local`), warm page cache;
  read      the same read without the hash;
  ship      the real path end to end: the driver's `Shipper.refs_for` (read, sha256 checked,
            `ray.put`), then the worker's `PipelineWorker._localize` (`ray.get`, sha256, atomic
            write + fsync into its cache folder, hashed again), split into driver and worker time.
Each figure is the median of --reps runs, each with a fresh object ref and cache folder.
Ray is started once (not counted, ~10 s).

    .venv/bin/python benchmarks/bench_ray_ship.py [--sizes 100,400] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorascope.harness.executor_ray import Shipper  # noqa: E402
from lorascope.harness.models import GenerationRequest, LoraSpec  # noqa: E402


class Receiver:
    """One Ray worker holding the real `PipelineWorker` (its pipeline is never loaded here)."""

    def __init__(self) -> None:
        from lorascope.harness.providers.local import DiffusersProvider
        from lorascope.harness.ray_worker import PipelineWorker

        self.worker = PipelineWorker(DiffusersProvider, {"model": "tiny-random"}, ship_loras="auto")

    def disk(self, path: str) -> tuple[float, float]:
        """(read + sha256 s, read only s) of a file this worker can open."""
        from lorascope.registry.digest import sha256_file

        started = time.perf_counter()
        sha256_file(path)
        hashed = time.perf_counter() - started
        started = time.perf_counter()
        with open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
        return hashed, time.perf_counter() - started

    def receive(self, cache: str, request: GenerationRequest, manifest: dict[str, str], shipped: dict) -> dict:
        from lorascope.harness.lora_shipping import Hasher

        self.worker._lora_cache = Path(cache)
        self.worker.hasher = Hasher()
        started = time.perf_counter()
        local, need = self.worker._localize([request], manifest, shipped)
        return {"worker_s": time.perf_counter() - started, "need": need, "path": local[0].loras[0].path}

    def parts(self, cache: str, sha: str, shipped: dict) -> tuple[float, float]:
        """(ray.get s, write_verified s) of the same shipment, timed apart."""
        import ray

        from lorascope.harness.lora_shipping import write_verified

        started = time.perf_counter()
        data = ray.get(shipped[sha])
        got = time.perf_counter() - started
        started = time.perf_counter()
        write_verified(Path(cache), sha, data)
        return got, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,400", help="file sizes in MB (10^6 bytes), comma-separated")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    import ray

    from benchmarks._machine import machine

    print(machine())
    started = time.perf_counter()
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"ray.init {time.perf_counter() - started:.1f} s, Ray {ray.__version__}")
    receiver = ray.remote(num_cpus=1)(Receiver).remote()
    work = Path(tempfile.mkdtemp(prefix="bench-ship-"))
    try:
        print("| size | disk: read + sha256 s | disk: read s | ship: driver read+check+put s | "
              "ship: worker get+check+write+fsync+check s | ship total s | total / (read + sha256) | of the worker's: ray.get s | write_verified s |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for mb in (int(s) for s in args.sizes.split(",")):
            data = os.urandom(mb * 10**6)
            sha = hashlib.sha256(data).hexdigest()
            path = work / f"lora-{mb}mb.safetensors"
            path.write_bytes(data)
            del data
            request = GenerationRequest(prompt="p", width=64, height=64, steps=1,
                                        loras=(LoraSpec(scale=1.0, path="/not/on/this/node.safetensors", sha256=sha),))
            manifest = {"/not/on/this/node.safetensors": sha}
            disk, plain, driver, worker, total, get, write = [], [], [], [], [], [], []
            for rep in range(args.reps):
                hashed, read_only = ray.get(receiver.disk.remote(str(path)))
                disk.append(hashed)
                plain.append(read_only)
                shipper = Shipper(ray, "auto")
                cache = work / f"cache-{mb}-{rep}"
                t0 = time.perf_counter()
                refs = asyncio.run(shipper.refs_for({str(path): sha}, [sha]))
                t1 = time.perf_counter()
                reply = ray.get(receiver.receive.remote(str(cache), request, manifest, refs))
                t2 = time.perf_counter()
                assert reply["need"] == [] and Path(reply["path"]).read_bytes().__len__() == mb * 10**6
                driver.append(t1 - t0)
                worker.append(reply["worker_s"])
                total.append(t2 - t0)
                got, wrote = ray.get(receiver.parts.remote(str(cache) + "-parts", sha, refs))
                get.append(got)
                write.append(wrote)
                del refs, shipper
                shutil.rmtree(cache)
                shutil.rmtree(str(cache) + "-parts")
            med = statistics.median
            print(f"| {mb} MB | {med(disk):.3f} | {med(plain):.3f} | {med(driver):.3f} | {med(worker):.3f} | "
                  f"{med(total):.3f} | {med(total) / med(disk):.1f}x | {med(get):.3f} | {med(write):.3f} |")
            path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
