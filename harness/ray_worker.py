"""One Ray worker: a provider instance (one pipeline, its loaded LoRAs) living in a Ray actor.

The driver turns this plain class into an actor (`ray.remote(PipelineWorker)`), one per GPU
or CPU slot. A worker never touches `run.db`: it gets requests, runs them through the same
provider code as an in-process run (so the images are the same bytes), and returns the
results with what it has loaded, so the driver can place the next batch where its LoRAs
are warm and count the loads. Provider errors come back as data (kind, message), never as a
pickled exception, so the driver records them exactly like an in-process failure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from typing import Any

from lorascope.harness.errors import ProviderError
from lorascope.harness.models import GenerationRequest
from lorascope.harness.secrets import describe_exception, redact


class PipelineWorker:
    """Holds one provider (its pipeline and adapters) for the lifetime of the actor."""

    def __init__(self, provider_cls: type, config: dict[str, Any], threads: int | None = None) -> None:
        # Ray caps OMP_NUM_THREADS at the actor's CPUs; on CPU torch's thread count changes the
        # last bits of the pixels, so by default torch picks its own count, as in a plain process.
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        self.threads = threads
        self.provider = provider_cls(provider_cls.config_model(**config))
        self.file_loads: Counter[str] = Counter()  # LoRA file -> times its adapter was loaded here
        self.batches = 0
        self.busy_s = 0.0

    def info(self) -> dict[str, Any]:
        """Where this worker runs and what it would put in a fingerprint (checked by the driver)."""
        gpu_ids: list[Any] = []
        try:
            import ray

            gpu_ids = list(ray.get_gpu_ids())
        except Exception:
            pass
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "gpus": [str(g) for g in gpu_ids],
            "model_version": self.provider.model_version(),
            "batch_seeds": bool(getattr(self.provider, "batch_seeds", False)),
            "torch_threads": self._torch_threads(),
        }

    def _torch_threads(self) -> int:
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return int(torch.get_num_threads())

    def warm(self) -> dict[str, Any]:
        """Load the pipeline now, so the workers load theirs side by side before any batch
        (a real model takes minutes). Returns the seconds it took, or the provider's error."""
        started = time.perf_counter()
        load = getattr(self.provider, "load_pipeline", None)
        try:
            if load is not None:
                load()
        except ProviderError as exc:
            return {"error": redact(exc.message), "load_s": time.perf_counter() - started}
        except Exception as exc:
            return {"error": redact(describe_exception(exc)), "load_s": time.perf_counter() - started}
        return {"error": None, "load_s": time.perf_counter() - started}

    def generate_batch(self, requests: list[GenerationRequest]) -> dict[str, Any]:
        """Run one batch (seeds of one cell group, or one request); never raises for a
        provider's own failure: `error` carries it."""
        before = self._loaded()
        started = time.perf_counter()
        results: list[Any] = []
        error: tuple[str, str] | None = None
        try:
            results = asyncio.run(self.provider.generate_batch(requests))
        except ProviderError as exc:
            error = (exc.kind, redact(exc.message))
        except Exception as exc:  # mapped like the in-process executor does: one redacted line
            error = ("internal", redact(describe_exception(exc)))
        self.busy_s += time.perf_counter() - started
        self.batches += 1
        loaded = self._loaded()
        for path in loaded - before:  # a file that appears went through the loader once
            self.file_loads[path] += 1
        return {"results": results, "error": error, "state": self.state(loaded)}

    def state(self, loaded: set[str] | None = None) -> dict[str, Any]:
        """What the driver shows and places by: loaded files, load counts, busy time."""
        return {
            "loaded": sorted(self._loaded() if loaded is None else loaded),
            "lora_loads": int(getattr(self.provider, "lora_loads", 0)),
            "file_loads": dict(self.file_loads),
            "batches": self.batches,
            "busy_s": self.busy_s,
        }

    def _loaded(self) -> set[str]:
        return set(getattr(self.provider, "loaded_adapters", {}).values())
