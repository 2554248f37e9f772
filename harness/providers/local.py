"""The local `diffusers` provider: diffusers' own `ZImagePipeline`, LoRAs through diffusers'
LoRA loader and peft, behind the same `Provider` interface as the hosted APIs.

Why it is shaped this way:
- The pipeline is loaded lazily, once per provider instance, and its load time is reported
  apart from inference time (a 6B model takes far longer to load than to run).
- Every distinct LoRA file is loaded once as a named adapter and kept; a request only
  activates its set with `set_adapters(names, adapter_weights=scales)`. A scale sweep never
  reloads or fuses (fusing leaves ~1e-6 residue, NOTES.md), so scale 0 and "no LoRA" give
  the base image bit-exactly and removing adapters restores the base exactly.
- With `compile` (or `hotswap`) the transformer keeps fixed adapter slots and new files are
  hot-swapped into them (`enable_lora_hotswap` + `hotswap=True`) so a compiled graph is not
  rebuilt for every LoRA set.
- Seeds drive a `torch.Generator` on the generating device, one per image, so the same
  request gives the same pixels and a batched call gives each seed its single-call image.
- The pipeline call is CPU/GPU bound: it runs in a worker thread under a per-instance lock.

torch/diffusers are imported inside functions so `lorascope --help` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import re
import secrets
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from lorascope.registry.digest import sha256_file
from lorascope.registry.models import PICKLE_SUFFIXES, REPO_ID
from lorascope.registry.safetensors_header import NotSafetensorsError, read_header
from lorascope.harness.errors import InvalidRequest, ProviderError, RejectedRequest
from lorascope.harness.models import (
    Cost,
    Estimate,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    LoraSpec,
    Timings,
)
from lorascope.harness.providers.base import OnSubmitted, Provider, ProviderConfig

DEFAULT_MODEL = "Tongyi-MAI/Z-Image-Turbo"
TINY_MODEL = "tiny-random"
MAX_LORAS = 3
SCALE_MIN, SCALE_MAX = 0.0, 4.0
#: Height/width multiple for the real model: vae_scale_factor (8) * 2.
REAL_SIZE_MULTIPLE = 16
JPEG_WEBP_QUALITY = 95


class DiffusersConfig(ProviderConfig):
    """Settings of the local pipeline (a suite's `providers: diffusers:` entry)."""

    #: One pipeline call at a time is all a single GPU does well.
    concurrency: int = Field(default=1, ge=1)
    model: str = Field(
        default=DEFAULT_MODEL,
        description="Hugging Face repo id, a local folder in the diffusers layout, or 'tiny-random'",
    )
    revision: str | None = Field(
        default=None,
        description="hub revision (commit sha, tag, branch); None = main. The commit actually "
        "loaded is recorded in every result.",
    )
    device: str = Field(default="auto", description="auto (cuda, then mps, then cpu), or a torch device")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="auto: bfloat16 on cuda/mps, float32 on cpu"
    )
    compile: bool = Field(default=False, description="torch.compile the transformer")
    cpu_offload: bool = Field(default=False, description="model CPU offload for small GPUs (cuda only)")
    batch_seeds: bool | None = Field(
        default=None, description="batch requests that differ only by seed; None = on for cuda"
    )
    guidance_scale: float = Field(default=0.0, ge=0.0, description="Turbo is guidance-distilled: 0")
    max_sequence_length: int = Field(default=512, ge=16)
    hotswap: bool | None = Field(
        default=None, description="hot-swap LoRAs into fixed adapter slots; None = when compiled"
    )
    hotswap_target_rank: int = Field(default=128, ge=1, description="highest LoRA rank to hot-swap")
    max_adapters: int = Field(default=16, ge=MAX_LORAS, description="loaded adapters kept (LRU)")
    local_files_only: bool = Field(default=False, description="never contact the hub for the model")


@dataclass
class _Adapter:
    name: str
    path: str
    sha256: str


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class DiffusersProvider(Provider):
    name: ClassVar[str] = "diffusers"
    config_model: ClassVar[type[ProviderConfig]] = DiffusersConfig
    asynchronous: ClassVar[bool] = False
    needs_local_files: ClassVar[bool] = True
    deterministic: ClassVar[bool] = True
    known_options: ClassVar[frozenset[str]] = frozenset({"guidance_scale", "max_sequence_length"})

    config: DiffusersConfig

    def __init__(self, config: DiffusersConfig | dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self._pipe: Any = None
        self._load_s: float | None = None
        self._load_reported = False
        self._loaded_revision: str | None = None
        self._device: str | None = None
        self._dtype_name: str | None = None
        # Only one thread touches the pipeline at a time; the asyncio lock keeps the event
        # loop from queueing work threads, the threading lock guards direct sync callers.
        self._alock: asyncio.Lock | None = None
        self._alock_loop: asyncio.AbstractEventLoop | None = None
        self._tlock = threading.RLock()
        self._adapters: OrderedDict[str, _Adapter] = OrderedDict()  # sha256 -> adapter (LRU)
        self._sha_cache: dict[tuple[str, int, int], str] = {}
        self._file_problems: dict[tuple[str, int, int, bool], str | None] = {}
        self._slots: list[str | None] = []  # hotswap mode: sha256 held by slot i
        self._slot_unit: dict[str, dict[str, float]] = {}  # slot -> layer -> scaling at weight 1
        #: What set_adapters/disable_lora last applied; None when unknown (after a load).
        self._active_state: tuple[Any, ...] | None = None
        self._lora_loads = 0  # files read by the LoRA loader (benchmarks and tests read it)
        self._adapter_counter = 0

    # ---- interface -------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.config.model

    def endpoint(self, request: GenerationRequest) -> str:
        return f"diffusers:{self.config.model}"

    def model_version(self) -> str:
        """`model@revision;dtype` from the settings alone, so it is the same before and after
        the pipeline loads (it is part of every fingerprint). The commit actually loaded is
        in each result's `software.revision`."""
        folder = Path(self.config.model).expanduser()
        if self.config.model == TINY_MODEL:
            from lorascope.harness.providers.tiny_zimage import TINY_REVISION

            revision = TINY_REVISION
        elif folder.is_dir():
            revision = _folder_identity(folder)
        else:
            revision = self.config.revision or "main"
        version = f"{self.config.model}@{revision};{self._resolve_dtype_name()}"
        # Settings that change the pixels are named when they differ from Turbo's defaults
        # (a suite sets them as config, which the fingerprint does not otherwise see).
        for field, label in (("guidance_scale", "guidance"), ("max_sequence_length", "max_seq")):
            value = getattr(self.config, field)
            if value != DiffusersConfig.model_fields[field].default:
                version += f";{label}={value:g}"
        return version

    def estimate(self, request: GenerationRequest) -> Estimate:
        # Rough figures only: local generation costs no money; time depends on the device.
        if self.config.model == TINY_MODEL:
            per_image = 0.05 + 0.02 * request.steps
        elif self._resolve_device() == "cuda":
            per_image = 0.1 * request.steps * max(request.megapixels, 0.25)
        else:
            per_image = 30.0 * request.steps * max(request.megapixels, 0.25)
        return Estimate(
            cost=Cost(usd=0.0, source="free", basis="local pipeline"),
            seconds=per_image * request.num_images,
        )

    def validate(self, request: GenerationRequest) -> list[str]:
        problems: list[str] = []
        multiple = self._size_multiple()
        for side, value in (("width", request.width), ("height", request.height)):
            if value <= 0 or value % multiple:
                problems.append(f"{side} {value} is not a positive multiple of {multiple} for {self.config.model}")
        if request.steps < 1:
            problems.append(f"steps {request.steps} must be at least 1")
        if request.num_images < 1:
            problems.append(f"num_images {request.num_images} must be at least 1")
        if request.seed is not None and not 0 <= request.seed < 2**63:
            problems.append(f"seed {request.seed} must be in [0, 2**63)")
        for key in request.options:
            if key not in self.known_options:
                problems.append(
                    f"option {key!r} is not understood by the diffusers provider "
                    f"(known: {', '.join(sorted(self.known_options))})"
                )
        if len(request.loras) > MAX_LORAS:
            problems.append(f"{len(request.loras)} LoRAs given; at most {MAX_LORAS} per request")
        seen: set[str] = set()
        for spec in request.loras:
            problems.extend(self._validate_lora(spec, seen))
        return problems

    async def generate(
        self, request: GenerationRequest, on_submitted: OnSubmitted | None = None
    ) -> GenerationResult:
        return (await self.generate_batch([request]))[0]

    async def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Several requests that differ only by seed, in one pipeline call, one generator per
        image: each image starts from its single-request noise (equal to the single call up
        to float rounding of the batched kernels; docs/local.md)."""
        if not requests:
            return []
        self._check_batchable(requests)
        problems = [p for r in requests for p in self.validate(r)]
        if problems:
            raise InvalidRequest(self.name, list(dict.fromkeys(problems)))
        started = time.perf_counter()
        async with self._loop_lock():
            return await asyncio.to_thread(self._generate_sync, requests, started)

    @property
    def batch_seeds(self) -> bool:
        """Whether the harness should group seeds into `generate_batch` calls."""
        if self.config.batch_seeds is not None:
            return self.config.batch_seeds
        return self._resolve_device() == "cuda"

    async def aclose(self) -> None:
        async with self._loop_lock():
            await asyncio.to_thread(self._release)

    def _loop_lock(self) -> asyncio.Lock:
        """One pipeline call at a time per instance; an asyncio.Lock belongs to one event
        loop, so a provider reused from another loop (tests, notebooks) gets a fresh one."""
        loop = asyncio.get_running_loop()
        if self._alock is None or self._alock_loop is not loop:
            self._alock, self._alock_loop = asyncio.Lock(), loop
        return self._alock

    # ---- LoRA management (public so tools and tests can drive it) ----------------------

    def remove_loras(self, paths: list[str | Path] | None = None) -> None:
        """Unload some adapters (by file) or all; the base model is restored exactly."""
        with self._tlock:
            if self._pipe is None or not self._adapters:
                return
            self._active_state = None
            if paths is None or self._hotswap_mode:
                self._pipe.unload_lora_weights()
                self._adapters.clear()
                self._slots = []
                self._slot_unit = {}
                if self._hotswap_mode:  # the next first load must prepare slots again
                    self._pipe.enable_lora_hotswap(
                        target_rank=self.config.hotswap_target_rank, check_compiled="warn"
                    )
                return
            shas = {self._sha_of(Path(p)) for p in paths}
            names = [a.name for sha, a in self._adapters.items() if sha in shas]
            if names:
                with _quiet_loader():
                    self._pipe.delete_adapters(names)
            for sha in shas:
                self._adapters.pop(sha, None)

    @property
    def lora_loads(self) -> int:
        """How many times a LoRA file went through the loader (a scale sweep adds none)."""
        return self._lora_loads

    @property
    def loaded_adapters(self) -> dict[str, str]:
        """Adapter name -> file path, for what is loaded now."""
        return {a.name: a.path for a in self._adapters.values()}

    def load_pipeline(self) -> Any:
        """Load the pipeline now (otherwise the first generation does it)."""
        with self._tlock:
            return self._ensure_pipeline()

    # ---- validation helpers ------------------------------------------------------------

    def _validate_lora(self, spec: LoraSpec, seen: set[str]) -> list[str]:
        label = spec.path or spec.label
        problems: list[str] = []
        if not SCALE_MIN <= spec.scale <= SCALE_MAX:
            problems.append(f"LoRA {label}: scale {spec.scale} is outside [{SCALE_MIN:g}, {SCALE_MAX:g}]")
        if not spec.path:
            problems.append(
                f"LoRA {spec.label}: the diffusers provider needs a local file (path); "
                "resolve the catalogue entry first"
            )
            return problems
        path = Path(spec.path)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            problems.append(
                f"LoRA {path}: pickle weight files execute code when loaded; only .safetensors is accepted"
            )
            return problems
        if path.suffix.lower() != ".safetensors":
            problems.append(f"LoRA {path}: not a .safetensors file")
            return problems
        if not path.is_file():
            problems.append(f"LoRA {path}: file does not exist")
            return problems
        file_problem = self._file_problem(path)
        if file_problem:
            problems.append(f"LoRA {path}: {file_problem}")
            return problems
        sha = self._sha_of(path)
        if spec.sha256 and spec.sha256 != sha:
            problems.append(f"LoRA {path}: content sha256 {sha[:12]}… does not match the pinned {spec.sha256[:12]}…")
        if sha in seen:
            problems.append(f"LoRA {path}: the same file appears twice in one request")
        seen.add(sha)
        return problems

    def _file_problem(self, path: Path) -> str | None:
        """Structure and compatibility of one file, checked once per file version (every
        request is validated, and a grid repeats the same few files many times)."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, self._pipe is not None)
        if key not in self._file_problems:
            self._file_problems[key] = _safetensors_header_problem(path) or self._header_incompatibility(path)
        return self._file_problems[key]

    def _header_incompatibility(self, path: Path) -> str | None:
        """Header-only verdict from `lorascope.registry.inspect` (no tensors read, no torch): catches a
        LoRA for another model family or size while the whole grid is validated, before
        anything loads. Returns None when it fits, when the verdict is unknown, or when the
        registry's inspector is not available (the loader's own error is translated then)."""
        try:
            from lorascope.registry.inspect import check_compatibility, inspect_file
        except ImportError:
            return None
        config = self._transformer_config()
        inspection = inspect_file(path, config=config, with_sha256=False)
        verdict = check_compatibility(inspection, config)
        return verdict.reason if verdict.verdict == "incompatible" else None

    def _transformer_config(self) -> dict[str, Any] | None:
        """The transformer config LoRAs must fit, known without loading weights."""
        if self._pipe is not None:
            return dict(self._pipe.transformer.config)
        if self.config.model == TINY_MODEL:
            from lorascope.harness.providers.tiny_zimage import TRANSFORMER_CONFIG

            return dict(TRANSFORMER_CONFIG)
        config_file = Path(self.config.model).expanduser() / "transformer" / "config.json"
        if config_file.is_file():
            try:
                return json.loads(config_file.read_text())
            except ValueError:
                return None
        return None  # the hub repo: Z-Image Turbo's own config (the inspector's default)

    def _size_multiple(self) -> int:
        if self._pipe is not None:
            return int(self._pipe.vae_scale_factor) * 2
        if self.config.model == TINY_MODEL:
            from lorascope.harness.providers.tiny_zimage import SIZE_MULTIPLE

            return SIZE_MULTIPLE
        vae_config = Path(self.config.model) / "vae" / "config.json"
        if vae_config.is_file():
            try:
                blocks = json.loads(vae_config.read_text())["block_out_channels"]
                return 2 ** (len(blocks) - 1) * 2
            except (ValueError, KeyError, TypeError):
                pass
        return REAL_SIZE_MULTIPLE

    def _sha_of(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        sha = self._sha_cache.get(key)
        if sha is None:
            sha = self._sha_cache[key] = sha256_file(path)
        return sha

    def _check_batchable(self, requests: list[GenerationRequest]) -> None:
        first = requests[0].model_copy(update={"seed": None})
        for other in requests[1:]:
            if other.model_copy(update={"seed": None}) != first:
                raise InvalidRequest(
                    self.name, ["generate_batch takes requests that differ only by seed"]
                )

    # ---- device, dtype, loading --------------------------------------------------------

    def _resolve_device(self) -> str:
        if self._device is not None:
            return self._device
        if self.config.device != "auto":
            return self.config.device
        from lorascope.harness.device import best_device

        return best_device()

    def _resolve_dtype_name(self) -> str:
        if self.config.dtype != "auto":
            return self.config.dtype
        device = self.config.device if self.config.device != "auto" else None
        if device is None:
            device = self._resolve_device()
        return "float32" if device.split(":")[0] == "cpu" else "bfloat16"

    @property
    def _hotswap_mode(self) -> bool:
        return self.config.hotswap if self.config.hotswap is not None else self.config.compile

    def _ensure_pipeline(self) -> Any:
        if self._pipe is not None:
            return self._pipe
        import torch

        device = self._resolve_device()
        dtype_name = self._resolve_dtype_name()
        dtype = getattr(torch, dtype_name)
        started = time.perf_counter()
        if self.config.model == TINY_MODEL:
            from lorascope.harness.providers.tiny_zimage import TINY_REVISION, build_tiny_pipeline

            pipe = build_tiny_pipeline(device="cpu", dtype=dtype)
            revision = TINY_REVISION
        else:
            pipe, revision = self._from_pretrained(dtype)
        pipe.set_progress_bar_config(disable=True)
        if self.config.cpu_offload and device.startswith("cuda"):
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        if self._hotswap_mode:
            # Must precede the first LoRA load; "warn" lets a compiled transformer take it.
            pipe.enable_lora_hotswap(target_rank=self.config.hotswap_target_rank, check_compiled="warn")
        if self.config.compile:
            pipe.transformer.compile()
        self._pipe = pipe
        self._device = device
        self._dtype_name = dtype_name
        self._loaded_revision = revision
        self._load_s = time.perf_counter() - started
        return pipe

    def _from_pretrained(self, dtype: Any) -> tuple[Any, str]:
        from diffusers import ZImagePipeline

        model = self.config.model
        folder = Path(model).expanduser()
        if folder.is_dir():
            try:
                pipe = ZImagePipeline.from_pretrained(str(folder), **_dtype_kwarg(dtype))
            except Exception as exc:  # diffusers raises OSError/ValueError/KeyError here
                raise ProviderError(
                    self.name,
                    f"cannot load a Z-Image pipeline from folder {folder}: {_one_line(exc)} "
                    "(expected the diffusers layout: model_index.json, transformer/, vae/, "
                    "text_encoder/, tokenizer/, scheduler/)",
                ) from None
            return pipe, f"local:{folder.resolve()}"
        if not REPO_ID.match(model):
            raise ProviderError(
                self.name,
                f"model {model!r} is neither an existing local folder nor a Hugging Face repo id "
                "(owner/name); use 'tiny-random' for the offline test model",
            )
        try:
            pipe = ZImagePipeline.from_pretrained(
                model,
                revision=self.config.revision,
                **_dtype_kwarg(dtype),
                local_files_only=self.config.local_files_only,
            )
        except Exception as exc:  # hub errors subclass OSError/HTTPError; keep one line
            raise ProviderError(
                self.name,
                f"cannot load {model}@{self.config.revision or 'main'}: the weights could not be "
                f"fetched from the Hugging Face hub and are not in the local cache "
                f"({type(exc).__name__}: {_one_line(exc, 200)}). Download them where the hub is "
                f"reachable (`hf download {model}`) or set model to a local folder in the "
                "diffusers layout.",
            ) from None
        return pipe, _cached_commit(model, self.config.revision) or (self.config.revision or "main")

    def _release(self) -> None:
        with self._tlock:
            self._pipe = None
            self._adapters.clear()
            self._slots = []
            self._slot_unit = {}
            self._active_state = None

    # ---- LoRA activation ---------------------------------------------------------------

    def _load_adapter(self, path: Path, sha: str, *, adapter_name: str, hotswap: bool = False) -> None:
        pipe = self._pipe
        self._lora_loads += 1
        self._active_state = None  # loading changes which adapters are active
        try:
            with _quiet_loader():
                pipe.load_lora_weights(str(path), adapter_name=adapter_name, hotswap=hotswap)
        except Exception as exc:
            if not hotswap:
                self._forget_partial_adapter(adapter_name)
            raise RejectedRequest(self.name, f"LoRA {path}: {_lora_failure_reason(exc)}") from None

    def _forget_partial_adapter(self, adapter_name: str) -> None:
        try:
            if adapter_name in self._pipe.get_list_adapters().get("transformer", []):
                self._pipe.delete_adapters([adapter_name])
        except Exception:  # nothing was injected: nothing to clean
            pass

    def _activate(self, loras: tuple[LoraSpec, ...]) -> float:
        """Make exactly `loras` active at their scales; returns seconds spent loading files."""
        if self._hotswap_mode:
            return self._activate_slots(loras)
        pipe = self._pipe
        load_s = 0.0
        names: list[str] = []
        shas = [self._sha_of(Path(spec.path or "")) for spec in loras]
        for sha in shas:  # this request's loaded adapters are the last to be evicted
            if sha in self._adapters:
                self._adapters.move_to_end(sha)
        for spec, sha in zip(loras, shas):
            path = Path(spec.path or "")
            adapter = self._adapters.get(sha)
            if adapter is None:
                self._evict_oldest()
                self._adapter_counter += 1
                adapter = _Adapter(f"lora{self._adapter_counter}_{sha[:8]}", str(path), sha)
                started = time.perf_counter()
                self._load_adapter(path, sha, adapter_name=adapter.name)
                load_s += time.perf_counter() - started
                self._adapters[sha] = adapter
            self._adapters.move_to_end(sha)
            names.append(adapter.name)
        if not self._adapters:
            return load_s
        state: tuple[Any, ...] = ("on", tuple(names), tuple(float(s.scale) for s in loras)) if names else ("off",)
        if state != self._active_state:  # a repeated request touches nothing
            if names:
                if self._active_state is None or self._active_state[0] != "on":
                    pipe.enable_lora()
                pipe.set_adapters(names, adapter_weights=list(state[2]))
            else:
                pipe.disable_lora()
            self._active_state = state
        return load_s

    def _evict_oldest(self) -> None:
        """Make room for one more adapter (least recently used first)."""
        while len(self._adapters) >= self.config.max_adapters:
            sha, adapter = next(iter(self._adapters.items()))
            self._active_state = None
            with _quiet_loader():
                self._pipe.delete_adapters([adapter.name])
            del self._adapters[sha]

    def _activate_slots(self, loras: tuple[LoraSpec, ...]) -> float:
        """Hotswap mode: fixed adapter names slot0..slot2; a new file replaces a slot's
        weights in place so a compiled transformer keeps its graph. Unused slots get weight
        0 (the active-adapter set, and so the traced code path, stays the same)."""
        pipe = self._pipe
        load_s = 0.0
        for index, spec in enumerate(loras):
            path = Path(spec.path or "")
            sha = self._sha_of(path)
            slot = f"slot{index}"
            if index < len(self._slots) and self._slots[index] == sha:
                continue
            started = time.perf_counter()
            fresh = index >= len(self._slots)
            try:
                self._load_adapter(path, sha, adapter_name=slot, hotswap=not fresh)
            except RejectedRequest:
                if not fresh:  # the slot may hold half-swapped weights: reload it next time
                    self._slots[index] = None
                    self._active_state = None
                raise
            load_s += time.perf_counter() - started
            self._slot_unit[slot] = _unit_scalings(pipe.transformer, slot)
            if fresh:
                self._slots.append(sha)
            else:
                self._slots[index] = sha
            self._adapters[sha] = _Adapter(slot, str(path), sha)
            # Keep the map one entry per slot.
            for other_sha, adapter in list(self._adapters.items()):
                if adapter.name == slot and other_sha != sha:
                    del self._adapters[other_sha]
        if self._slots:
            weights = [float(s.scale) for s in loras] + [0.0] * (len(self._slots) - len(loras))
            state = ("slots", len(self._slots), tuple(weights))
            if state != self._active_state:
                names = [f"slot{i}" for i in range(len(self._slots))]
                activate = self._active_state is None or self._active_state[1] != len(self._slots)
                _set_slot_weights(pipe.transformer, names, weights, self._slot_unit, activate=activate)
                self._active_state = state
        return load_s

    # ---- the pipeline call ------------------------------------------------------------

    def _generate_sync(self, requests: list[GenerationRequest], started: float) -> list[GenerationResult]:
        import torch

        with self._tlock:
            pipe = self._ensure_pipeline()
            load_s = 0.0
            if not self._load_reported:
                load_s += self._load_s or 0.0
                self._load_reported = True
            template = requests[0]
            load_s += self._activate(template.loras)

            seeds: list[int] = []
            drawn: list[bool] = []
            for request in requests:
                base_seed = request.seed if request.seed is not None else secrets.randbits(63)
                drawn.append(request.seed is None)
                seeds.append(base_seed)
            image_seeds = [s + i for s in seeds for i in range(template.num_images)]
            gen_device = "cuda" if str(self._device).startswith("cuda") else "cpu"
            generators = [torch.Generator(device=gen_device).manual_seed(s) for s in image_seeds]
            options = template.options
            call_started = time.perf_counter()
            try:
                output = pipe(
                    prompt=[template.prompt] * len(image_seeds),
                    height=template.height,
                    width=template.width,
                    num_inference_steps=template.steps,
                    guidance_scale=float(options.get("guidance_scale", self.config.guidance_scale)),
                    max_sequence_length=int(options.get("max_sequence_length", self.config.max_sequence_length)),
                    generator=generators,
                    output_type="pil",
                )
            except torch.cuda.OutOfMemoryError as exc:
                raise ProviderError(self.name, f"out of GPU memory: {_one_line(exc, 200)}") from None
            if str(self._device).startswith("cuda"):
                torch.cuda.synchronize()
            inference_s = time.perf_counter() - call_started
            per_image_s = inference_s / len(image_seeds)
            images = [_encode(img, template.output_format) for img in output.images]

        software = self._software()
        results = []
        for index, request in enumerate(requests):
            own = images[index * template.num_images : (index + 1) * template.num_images]
            results.append(
                GenerationResult(
                    provider=self.name,
                    images=own,
                    seed=seeds[index],
                    timings=Timings(
                        total_s=time.perf_counter() - started,
                        inference_s=per_image_s * template.num_images,
                        load_s=load_s if index == 0 else 0.0,
                    ),
                    cost=Cost(usd=0.0, source="free", basis="local pipeline"),
                    metadata={
                        "image_seeds": image_seeds[index * template.num_images : (index + 1) * template.num_images],
                        "seed_drawn": drawn[index],
                        "batch_size": len(image_seeds),
                        "per_image_inference_s": per_image_s,
                        "pipeline_load_s": self._load_s,
                        "adapters": [self._adapters[self._sha_of(Path(s.path or ''))].name for s in request.loras],
                    },
                    software=software,
                )
            )
        return results

    def _software(self) -> dict[str, str]:
        import diffusers
        import peft
        import torch
        import transformers

        device = str(self._device)
        if device.startswith("cuda") and torch.cuda.is_available():
            device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        return {
            "model": self.config.model,
            "revision": self._loaded_revision or "",
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "peft": peft.__version__,
            "transformers": transformers.__version__,
            "device": device,
            "dtype": str(self._dtype_name),
            "compile": str(self.config.compile).lower(),
            "cpu_offload": str(self.config.cpu_offload).lower(),
        }


def _encode(image: Any, fmt: str) -> GeneratedImage:
    """Pillow encode; png is lossless, jpeg/webp at quality 95. No timestamps or other
    varying metadata, so the same pixels give the same bytes."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_WEBP_QUALITY)
    else:
        image.save(buffer, format="WEBP", quality=JPEG_WEBP_QUALITY)
    return GeneratedImage(data=buffer.getvalue(), format=fmt, width=image.width, height=image.height)


def _safetensors_header_problem(path: Path) -> str | None:
    """Cheap structural check (the registry's header reader) before handing a file to torch."""
    try:
        header = read_header(path)
    except NotSafetensorsError as exc:
        reason = str(exc)
        return reason if reason.startswith("not a safetensors file") else f"not a safetensors file ({reason})"
    except OSError as exc:
        return f"not a readable safetensors file ({_one_line(exc, 120)})"
    if not any(k != "__metadata__" for k in header):
        return "safetensors file holds no tensors"
    return None


def _lora_failure_reason(exc: BaseException) -> str:
    """Turn a diffusers/peft loading exception into one line a user can act on."""
    text = _one_line(exc, 400)
    name = type(exc).__name__
    if "not found in the base model" in text or name == "NoMatchingPeftModuleError":
        match = re.search(r"\{([^}]*)\}", text)
        examples = ""
        if match:
            modules = sorted(m.strip(" '\"") for m in match.group(1).split(","))
            examples = f" (e.g. {', '.join(modules[:2])})"
        return (
            "not a Z-Image LoRA: none of its target modules exist in the Z-Image transformer"
            f"{examples}; it was made for another model family"
        )
    if "size mismatch" in text or "shape" in text.lower():
        match = re.search(
            r"size mismatch for (\S+?)\.lora_[AB]\.[^:]*: copying a param with shape "
            r"torch\.Size\((\[[^\]]*\])\) from checkpoint, the shape in current model is "
            r"torch\.Size\((\[[^\]]*\])\)",
            text,
        )
        detail = f" ({match.group(1)}: file has {match.group(2)}, model needs {match.group(3)})" if match else ""
        return (
            "tensor shapes do not match this Z-Image transformer; the LoRA was trained for a "
            f"different model or size{detail}"
        )
    if "Invalid adapter checkpoint" in text:
        return "not a LoRA (keys without lora_A/lora_B or lora_down/lora_up)"
    if "hotswap" in text.lower():
        return f"cannot be hot-swapped into the compiled transformer: {text}"
    return f"could not be loaded ({name}: {text})"


@contextlib.contextmanager
def _quiet_loader() -> Iterator[None]:
    """diffusers logs a multi-line error (and peft warns) before raising; the provider
    raises its own one-line error instead, so silence theirs for the load."""
    diffusers_logger = logging.getLogger("diffusers")
    previous = diffusers_logger.level
    diffusers_logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        diffusers_logger.setLevel(previous)


def _unit_scalings(transformer: Any, slot: str) -> dict[str, float]:
    """Each LoRA layer's scaling for `slot` at weight 1 (alpha/rank of the file just loaded
    or hot-swapped in; peft sets exactly that on load)."""
    from peft.tuners.lora.layer import LoraLayer

    return {
        name: float(module.scaling[slot])
        for name, module in transformer.named_modules()
        if isinstance(module, LoraLayer) and slot in module.scaling
    }


def _set_slot_weights(
    transformer: Any,
    names: list[str],
    weights: list[float],
    unit: dict[str, dict[str, float]],
    *,
    activate: bool,
) -> None:
    """Hotswap mode's `set_adapters`: write each slot's scale into its scaling tensor in
    place. peft's `set_scale` would put a Python float there, and a compiled graph
    specialises on float values, so every new scale would recompile; a tensor filled in
    place keeps the graph. `activate` (re)sets the active adapter list (slots added)."""
    import torch
    from peft.tuners.lora.layer import LoraLayer

    for module_name, module in transformer.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if activate:
            module.set_adapter(names)
        for name, weight in zip(names, weights):
            if name not in module.scaling:
                continue
            base = unit[name][module_name]
            current = module.scaling[name]
            if isinstance(current, torch.Tensor):
                current.fill_(weight * base)
            else:
                module.scaling[name] = torch.tensor(weight * base, device=module.lora_A[name].weight.device)


def _folder_identity(folder: Path) -> str:
    """What a local model folder holds, cheaply: a hub snapshot's commit when the folder is
    one, else a digest of every file's path, size and mtime (new weights in the same folder
    must not be mistaken for the old ones; hashing gigabytes per run would be too slow)."""
    parts = folder.resolve().parts
    if "snapshots" in parts[:-1]:
        return parts[parts.index("snapshots") + 1]
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"files-{digest.hexdigest()[:16]}"


def _dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """diffusers renamed `torch_dtype` to `dtype` (the old name warns); older releases only
    know `torch_dtype`."""
    from diffusers.utils import deprecation_utils

    name = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    return {name: dtype}


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit sha of the snapshot diffusers loaded (from the local hub cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "model_index.json", revision=revision or "main")
    except Exception:
        return None
    if isinstance(hit, str):
        parts = Path(hit).parts
        if "snapshots" in parts:
            return parts[parts.index("snapshots") + 1]
    return None


__all__ = ["DiffusersConfig", "DiffusersProvider", "DEFAULT_MODEL", "TINY_MODEL"]
