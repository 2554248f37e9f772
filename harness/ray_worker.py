"""One Ray worker: a provider instance (one pipeline, its loaded LoRAs) living in a Ray actor.

The driver turns this plain class into an actor (`ray.remote(PipelineWorker)`), one per GPU
or CPU slot. A worker never touches `run.db`: it gets requests, runs them through the same
provider code as an in-process run (so the images are the same bytes), and returns the
results with what it has loaded, so the driver can place the next batch where its LoRAs
are warm and count the loads. Provider errors come back as data (kind, message), never as a
pickled exception, so the driver records them exactly like an in-process failure.

Out of GPU memory is reported apart (`oom: True`, kind `out_of_memory`) after the worker frees
torch's cached blocks, so the driver can split the batch into single cells and try them again
(a batch of seeds needs several times the activations of one image).

LoRA files: the driver sends a manifest (the request's path -> the sha256 it was planned with).
The worker loads a file with exactly those bytes: the path itself when it holds them, else its
own cache folder's copy, else it answers `need` (the sha256s it lacks) and the driver ships the
bytes through Ray's object store (`lora_shipping.py`, setting `ship_loras`). Placement speaks the
driver's paths, so what the worker reports as loaded is translated back to them.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lorascope.harness.errors import ProviderError
from lorascope.harness.lora_shipping import (
    LORA_UNAVAILABLE, Hasher, ShipError, default_cache_dir, find_local, refuse_pickle, why_not_local, write_verified,
)
from lorascope.harness.models import GenerationRequest
from lorascope.harness.secrets import describe_exception, redact


#: Error kind of a generation that ran out of GPU memory on a Ray worker.
OUT_OF_MEMORY = "out_of_memory"


class PipelineWorker:
    """Holds one provider (its pipeline and adapters) for the lifetime of the actor."""

    def __init__(self, provider_cls: type, config: dict[str, Any], threads: int | None = None,
                 oom_above: int | None = None, fail_warm: bool = False, *, ship_loras: str = "auto",
                 lora_cache: str | None = None) -> None:
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
        # test hooks only (executor_ray.TEST_HOOKS_ENV); None / False in real runs
        self.oom_above = oom_above
        self.fail_warm = fail_warm
        self.ooms = 0
        self.ship_loras = ship_loras
        self._lora_cache = Path(lora_cache).expanduser() if lora_cache else None
        # the provider's own hash memo when it has one: a LoRA checked here is not hashed again to load
        hashes = getattr(self.provider, "file_hashes", None)
        self.hasher = Hasher(hashes) if hashes is not None else Hasher()
        self.origin: dict[str, str] = {}  # file loaded here -> the driver's path for it
        self.shipped_in = 0  # files written into this worker's cache folder from shipped bytes

    @property
    def lora_cache(self) -> Path:
        """This worker's folder for shipped files (on its own node)."""
        if self._lora_cache is None:
            self._lora_cache = default_cache_dir()
        return self._lora_cache

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
            if self.fail_warm:
                raise RuntimeError("test hook: this worker fails to load its pipeline")
            if load is not None:
                pipe = load()
                if self.oom_above is not None:
                    _fake_oom_above(pipe, self.oom_above)
        except ProviderError as exc:
            return {"error": redact(exc.message), "load_s": time.perf_counter() - started}
        except Exception as exc:
            return {"error": redact(describe_exception(exc)), "load_s": time.perf_counter() - started}
        return {"error": None, "load_s": time.perf_counter() - started}

    def generate_batch(self, requests: list[GenerationRequest], manifest: dict[str, str] | None = None,
                       shipped: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one batch (seeds of one cell group, or one request); never raises for a
        provider's own failure: `error` carries it. With a `manifest` (LoRA path -> planned
        sha256) each LoRA is loaded from a file with exactly those bytes (`shipped`: sha256 ->
        bytes or a Ray object ref, written to the cache folder first); when one is missing the
        reply is `need` (the sha256s) and nothing runs."""
        if manifest is not None:
            try:
                local, need = self._localize(requests, manifest, shipped or {})
            except ShipError as exc:
                return {"results": [], "error": (exc.kind, redact(str(exc))), "oom": False, "state": self.state()}
            if need:
                return {"results": [], "error": None, "oom": False, "need": need, "state": self.state()}
            requests = local
        before = self._loaded()
        started = time.perf_counter()
        results: list[Any] = []
        error: tuple[str, str] | None = None
        oom = False
        try:
            results = asyncio.run(self.provider.generate_batch(requests))
        except ProviderError as exc:
            error = (exc.kind, redact(exc.message))
            oom = _is_oom(exc)
        except Exception as exc:  # mapped like the in-process executor does: one redacted line
            error = ("internal", redact(describe_exception(exc)))
            oom = _is_oom(exc)
        if oom:
            self.ooms += 1
            error = (OUT_OF_MEMORY, error[1] if error else "out of GPU memory")
            _free_gpu_memory()
        self.busy_s += time.perf_counter() - started
        self.batches += 1
        for request, result in zip(requests, results):
            if request.loras:  # the files this worker loaded (its cache folder when shipped)
                result.metadata["lora_files"] = [s.path for s in request.loras]
        loaded = self._loaded()
        for path in loaded - before:  # a file that appears went through the loader once
            self.file_loads[path] += 1
        return {"results": results, "error": error, "oom": oom, "state": self.state(loaded)}

    def state(self, loaded: set[str] | None = None) -> dict[str, Any]:
        """What the driver shows and places by: loaded files, load counts, busy time."""
        return {
            "loaded": sorted(self._loaded() if loaded is None else loaded),
            "lora_loads": int(getattr(self.provider, "lora_loads", 0)),
            "file_loads": dict(self.file_loads),
            "batches": self.batches,
            "busy_s": self.busy_s,
            "ooms": self.ooms,
            "shipped_in": self.shipped_in,
        }

    def _loaded(self) -> set[str]:
        """Loaded files by the driver's paths (placement and load counts speak those)."""
        return {self.origin.get(p, p) for p in getattr(self.provider, "loaded_adapters", {}).values()}

    def _localize(self, requests: list[GenerationRequest], manifest: dict[str, str],
                  shipped: dict[str, Any]) -> tuple[list[GenerationRequest], list[str]]:
        """The requests with each LoRA path replaced by a file here holding the planned bytes,
        and the sha256s this worker still needs shipped. Raises `ShipError` (one line) when a
        file cannot be had: `never` and not here, or shipped bytes that are not the planned ones."""
        found: dict[str, Path] = {}
        need: list[str] = []
        for path, sha in manifest.items():
            refuse_pickle(path)
            if self.ship_loras == "never":
                local = Path(path) if self.hasher.sha_of(Path(path)) == sha else None
                if local is None:
                    raise ShipError(
                        f"LoRA {path}: {why_not_local(path, sha, self.hasher)} ({socket.gethostname()}) and "
                        "ship_loras is never: put the file at the same path on every node, or set ship_loras: auto",
                        LORA_UNAVAILABLE)
            else:
                local = find_local(path, sha, self.lora_cache, self.hasher, use_path=self.ship_loras != "always")
                if local is None and sha in shipped:
                    data = shipped[sha]
                    if not isinstance(data, (bytes, bytearray, memoryview)):
                        import ray

                        data = ray.get(data)
                    local = write_verified(self.lora_cache, sha, bytes(data))
                    self.shipped_in += 1
            if local is None:
                need.append(sha)
                continue
            found[path] = local
            self.origin[str(local)] = path
        if need:
            return requests, sorted(set(need))
        out = []
        for request in requests:
            loras = tuple(
                s.model_copy(update={"path": str(found[s.path]), "sha256": manifest[s.path]}) if s.path in found else s
                for s in request.loras
            )
            out.append(request.model_copy(update={"loras": loras}) if loras != request.loras else request)
        return out, []


def _oom_types() -> tuple[type, ...]:
    import torch

    return tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})


def _is_oom(exc: BaseException) -> bool:
    """True when torch's out-of-memory error is `exc` or in its chain (the local provider
    re-raises it as a ProviderError `from None`, which keeps it as `__context__`)."""
    oom, seen = _oom_types(), 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        if isinstance(cur, oom):
            return True
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return False


def _free_gpu_memory() -> None:
    """Drop the failed call's tensors and hand torch's cached blocks back before the next batch."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fake_oom_above(pipe: Any, limit: int) -> None:
    """Test hook: the transformer raises torch's CUDA out-of-memory error when one call holds
    more than `limit` images (it gets a list of latents, one per image), so the real path
    (the provider's OOM translation, this worker, the driver's split) runs without a GPU."""
    import torch

    transformer = pipe.transformer
    forward = transformer.forward

    def guarded(x: Any, *args: Any, **kwargs: Any) -> Any:
        if len(x) > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (test hook: {len(x)} images > {limit})")
        return forward(x, *args, **kwargs)

    transformer.forward = guarded
