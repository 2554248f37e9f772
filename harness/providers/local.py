"""The local `diffusers` provider: diffusers' own `ZImagePipeline`, LoRAs through diffusers'
LoRA loader and peft, behind the same `Provider` interface as the hosted APIs.

It is three parts, one module each, glued together here:
- `local_pipeline.py` -- the pipeline cache: loaded lazily, once per provider instance, its
  load time reported apart from inference time; device and dtype chosen from the settings.
- `local_adapters.py` -- LoRA management: each distinct file loaded once as a named adapter
  and kept (LRU); a request only activates its set at its scales (never fused, so scale 0
  and "no LoRA" give the base image bit-exactly); hot-swap slots for a compiled transformer.
- `local_requests.py` -- request mapping: what the pipeline accepts, the pipeline call with
  Turbo's settings and one seeded generator per image, and the results.
This module checks LoRA files while the grid is validated, and runs the pipeline call in a
worker thread under a per-instance lock (it is CPU/GPU bound).

torch/diffusers are imported inside functions so `lorascope --help` stays fast.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from lorascope.harness.errors import InvalidRequest, ProviderError
from lorascope.harness.models import Estimate, GenerationRequest, GenerationResult, LoraSpec
from lorascope.harness.modes import mode_problems
from lorascope.harness.providers.base import OnSubmitted, Provider, ProviderConfig
from lorascope.harness.providers.local_adapters import Adapters, safetensors_header_problem
from lorascope.harness.providers.local_pipeline import REAL_SIZE_MULTIPLE, TINY_MODEL, PipelineCache, one_line
from lorascope.harness.providers.local_requests import (
    JPEG_WEBP_QUALITY,
    MAX_LORAS,
    check_batchable,
    controlnet_problems,
    denoising_steps,
    draw_seeds,
    encode,
    free,
    pipeline_kwargs,
    request_problems,
    to_results,
    vae_round_trip,
)
from lorascope.harness.ray_settings import ExecutorSettings
from lorascope.registry.digest import FileHashes
from lorascope.registry.models import PICKLE_SUFFIXES

DEFAULT_MODEL = "Tongyi-MAI/Z-Image-Turbo"
SCALE_MIN, SCALE_MAX = 0.0, 4.0


class DiffusersConfig(ExecutorSettings):
    """Settings of the local pipeline (a suite's `providers: diffusers:` entry); the
    executor fields (`executor: ray`, `workers`, ...) come from `ExecutorSettings`."""

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
    controlnet: str | None = Field(
        default=None, description="ControlNet for mode controlnet: a .safetensors file, a diffusers folder, a hub "
        "repo id (e.g. alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union), or tiny-random")
    controlnet_revision: str | None = Field(default=None, description="hub revision of the ControlNet repo")
    controlnet_config: str | None = Field(
        default=None, description="config of a single-file ControlNet: a folder holding its config.json, or a hub "
        "repo id; None = the repo diffusers infers from the file's keys (hub or local hub cache; docs/local.md)")

    @field_validator("model", "controlnet", "controlnet_config", mode="before")
    @classmethod
    def _beside_the_suite(cls, value: Any, info: ValidationInfo) -> Any:
        """A relative path is read from the suite's folder when it names something there (the
        suite's own `controlnet: weights/cn.safetensors` works from any working directory);
        otherwise it is left as written: a hub repo id, or a path from the working directory."""
        base = (info.context or {}).get("base_dir")
        if base is None or not isinstance(value, str) or not value or value == "tiny-random":
            return value
        path = Path(value).expanduser()
        if path.is_absolute():
            return value
        beside = Path(base) / path
        return str(beside.resolve()) if beside.exists() else value

    @field_validator("controlnet")
    @classmethod
    def _controlnet_file(cls, value: str | None) -> str | None:
        """Refused with the settings, before any pipeline loads: pickle runs code on load, and
        a missing file is better named now than after the pipeline loaded."""
        from lorascope.harness.providers.controlnet_weights import weights_problem

        problem = weights_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @property
    def hotswap_mode(self) -> bool:
        """Fixed adapter slots: asked for, or implied by a compiled transformer."""
        return self.hotswap if self.hotswap is not None else self.compile


class DiffusersProvider(Provider):
    name: ClassVar[str] = "diffusers"
    config_model: ClassVar[type[ProviderConfig]] = DiffusersConfig
    asynchronous: ClassVar[bool] = False
    needs_local_files: ClassVar[bool] = True
    deterministic: ClassVar[bool] = True
    known_options: ClassVar[frozenset[str]] = frozenset({"guidance_scale", "max_sequence_length"})
    #: Image modes: diffusers' Img2Img and Inpaint pipelines share the loaded components.
    modes: ClassVar[frozenset[str]] = frozenset({"txt2img", "img2img", "inpaint", "controlnet"})
    input_forms: ClassVar[str] = "bytes"

    config: DiffusersConfig

    def __init__(self, config: DiffusersConfig | dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self._pipeline = PipelineCache(self.config, self.name)
        self._adapters = Adapters(self.config, self.name)
        # Only one thread touches the pipeline at a time; the asyncio lock keeps the event
        # loop from queueing work threads, the threading lock guards direct sync callers.
        self._alock: asyncio.Lock | None = None
        self._alock_loop: asyncio.AbstractEventLoop | None = None
        self._tlock = threading.RLock()
        self._file_problems: dict[tuple[str, int, int, bool], str | None] = {}

    # ---- interface -------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.config.model

    def endpoint(self, request: GenerationRequest) -> str:
        if request.mode == "controlnet":  # the ControlNet's weights shape the picture too
            return f"diffusers:{self.config.model}+controlnet:{self._pipeline.controlnet_identity()}"
        return f"diffusers:{self.config.model}"

    def model_version(self) -> str:
        """`model@revision;dtype` from the settings alone, so it is the same before and after
        the pipeline loads (it is part of every fingerprint). The commit actually loaded is
        in each result's `software.revision`."""
        version = f"{self.config.model}@{self._pipeline.revision()};{self._pipeline.resolve_dtype_name()}"
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
        return Estimate(cost=free(), seconds=per_image * request.num_images)

    def validate(self, request: GenerationRequest) -> list[str]:
        problems = request_problems(request, model=self.config.model, size_multiple=self._pipeline.size_multiple(),
                                    known_options=self.known_options, provider_name=self.name)
        problems += mode_problems(self, request)  # image modes from local files
        problems += controlnet_problems(request, self.config.controlnet)
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
        check_batchable(self.name, requests)
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
            self._adapters.remove(self._pipeline.pipe, paths)

    @property
    def lora_loads(self) -> int:
        """How many times a LoRA file went through the loader (a scale sweep adds none)."""
        return self._adapters.loads

    @property
    def loaded_adapters(self) -> dict[str, str]:
        """Adapter name -> file path, for what is loaded now."""
        return self._adapters.loaded

    @property
    def file_hashes(self) -> FileHashes:
        """The sha256 memo the LoRA loader uses: a Ray worker checks files through the same one,
        so a LoRA it verified is not read again to be loaded."""
        return self._adapters.hashes

    def load_pipeline(self) -> Any:
        """Load the pipeline now (otherwise the first generation does it)."""
        with self._tlock:
            return self._pipeline.ensure()

    def _activate(self, loras: tuple[LoraSpec, ...]) -> float:
        """Make exactly `loras` active at their scales; returns seconds spent loading files."""
        return self._adapters.activate(self._pipeline.pipe, loras)

    def _resolve_device(self) -> str:
        return self._pipeline.resolve_device()

    # ---- LoRA file checks (while the grid is validated) ---------------------------------

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
        sha = self._adapters.sha_of(path)
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
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, self._pipeline.pipe is not None)
        if key not in self._file_problems:
            self._file_problems[key] = safetensors_header_problem(path) or self._header_incompatibility(path)
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
        config = self._pipeline.transformer_config()
        inspection = inspect_file(path, config=config, with_sha256=False)
        verdict = check_compatibility(inspection, config)
        return verdict.reason if verdict.verdict == "incompatible" else None

    # ---- the pipeline call ------------------------------------------------------------

    def _generate_sync(self, requests: list[GenerationRequest], started: float) -> list[GenerationResult]:
        import torch

        with self._tlock:
            pipe = self._pipeline.ensure()
            load_s = self._pipeline.take_load_s()
            template = requests[0]
            load_s += self._activate(template.loras)
            seeds, drawn, image_seeds = draw_seeds(requests)
            on_cuda = str(self._pipeline.device).startswith("cuda")
            generators = [torch.Generator(device="cuda" if on_cuda else "cpu").manual_seed(s) for s in image_seeds]
            call_started = time.perf_counter()
            try:
                if denoising_steps(template) < 1:  # strength 0: the input through the VAE
                    output_images = vae_round_trip(pipe, template, len(generators))
                else:
                    mode_pipe = self._pipeline.for_mode(template.mode)
                    output_images = mode_pipe(**pipeline_kwargs(template, self.config, generators)).images
            except torch.cuda.OutOfMemoryError as exc:
                raise ProviderError(self.name, f"out of GPU memory: {one_line(exc, 200)}") from None
            if on_cuda:
                torch.cuda.synchronize()
            inference_s = time.perf_counter() - call_started
            images = [encode(img, template.output_format) for img in output_images]
            adapters = [[self._adapters.name_of(s) for s in r.loras] for r in requests]

        return to_results(self.name, requests, images, seeds=seeds, drawn=drawn, image_seeds=image_seeds,
                          started=started, inference_s=inference_s, load_s=load_s,
                          pipeline_load_s=self._pipeline.load_s, adapters=adapters,
                          software=self._pipeline.software())

    def _release(self) -> None:
        with self._tlock:
            self._pipeline.release()
            self._adapters.forget()


__all__ = [
    "DiffusersConfig", "DiffusersProvider", "DEFAULT_MODEL", "TINY_MODEL", "MAX_LORAS",
    "REAL_SIZE_MULTIPLE", "JPEG_WEBP_QUALITY",
]
