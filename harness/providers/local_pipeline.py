"""The local provider's pipeline cache: diffusers' `ZImagePipeline` loaded lazily, once per
provider instance, and kept until released.

Why it is its own part: loading a 6B model takes far longer than running it, so the load
happens once, its time is reported apart from inference (once, on the first result), and
the device/dtype choice is made here, from the settings alone, so the fingerprint's model
version is the same before and after the load. torch/diffusers are imported inside the
functions that need them (`lorascope --help` stays fast).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorascope.harness.errors import ProviderError
from lorascope.registry.models import REPO_ID

if TYPE_CHECKING:
    from lorascope.harness.providers.local import DiffusersConfig

TINY_MODEL = "tiny-random"
#: Height/width multiple for the real model: vae_scale_factor (8) * 2.
REAL_SIZE_MULTIPLE = 16


def one_line(text: object, limit: int = 300) -> str:
    """An exception's text as one line of at most `limit` characters (for user messages)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class PipelineCache:
    """One provider instance's pipeline, its device/dtype, and what was loaded (revision)."""

    def __init__(self, config: "DiffusersConfig", provider_name: str) -> None:
        self.config = config
        self.provider_name = provider_name
        self.pipe: Any = None
        self.load_s: float | None = None
        self._load_reported = False
        self.loaded_revision: str | None = None
        self.device: str | None = None
        self.dtype_name: str | None = None
        self._mode_pipes: dict[str, Any] = {}

    # ---- choices made from the settings (before any load) -------------------------------

    def resolve_device(self) -> str:
        if self.device is not None:
            return self.device
        if self.config.device != "auto":
            return self.config.device
        from lorascope.harness.device import best_device

        return best_device()

    def resolve_dtype_name(self) -> str:
        if self.config.dtype != "auto":
            return self.config.dtype
        device = self.config.device if self.config.device != "auto" else None
        if device is None:
            device = self.resolve_device()
        return "float32" if device.split(":")[0] == "cpu" else "bfloat16"

    def revision(self) -> str:
        """What the settings say will be loaded: the tiny model's version, a local folder's
        identity, or the hub revision (None = main)."""
        folder = Path(self.config.model).expanduser()
        if self.config.model == TINY_MODEL:
            from lorascope.harness.providers.tiny_zimage import TINY_REVISION

            return TINY_REVISION
        if folder.is_dir():
            return folder_identity(folder)
        return self.config.revision or "main"

    def size_multiple(self) -> int:
        if self.pipe is not None:
            return int(self.pipe.vae_scale_factor) * 2
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

    def transformer_config(self) -> dict[str, Any] | None:
        """The transformer config LoRAs must fit, known without loading weights."""
        if self.pipe is not None:
            return dict(self.pipe.transformer.config)
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

    # ---- loading ---------------------------------------------------------------------------

    def ensure(self) -> Any:
        """The pipeline, loaded on first use (the caller holds the provider's lock)."""
        if self.pipe is not None:
            return self.pipe
        import torch

        device = self.resolve_device()
        dtype_name = self.resolve_dtype_name()
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
        if self.config.hotswap_mode:
            # Must precede the first LoRA load; "warn" lets a compiled transformer take it.
            pipe.enable_lora_hotswap(target_rank=self.config.hotswap_target_rank, check_compiled="warn")
        if self.config.compile:
            pipe.transformer.compile()
        self.pipe = pipe
        self.device = device
        self.dtype_name = dtype_name
        self.loaded_revision = revision
        self.load_s = time.perf_counter() - started
        return pipe

    def for_mode(self, mode: str) -> Any:
        """The pipeline for a generation mode: text-to-image is the loaded one; img2img and
        inpaint are diffusers' `ZImageImg2ImgPipeline` / `ZImageInpaintPipeline` built with
        `from_pipe`, which shares every component (no second copy of the weights), so the
        LoRAs loaded into the transformer serve every mode."""
        pipe = self.ensure()
        if mode == "txt2img":
            return pipe
        if mode not in self._mode_pipes:
            from diffusers import ZImageControlNetPipeline, ZImageImg2ImgPipeline, ZImageInpaintPipeline

            if mode == "controlnet":
                derived = ZImageControlNetPipeline.from_pipe(pipe, controlnet=self._load_controlnet(pipe))
            elif mode in ("img2img", "inpaint"):
                derived = {"img2img": ZImageImg2ImgPipeline, "inpaint": ZImageInpaintPipeline}[mode].from_pipe(pipe)
            else:
                raise ProviderError(self.provider_name, f"mode {mode} has no local pipeline")
            derived.set_progress_bar_config(disable=True)
            self._mode_pipes[mode] = derived
        return self._mode_pipes[mode]

    def controlnet_identity(self) -> str | None:
        """What the `controlnet` setting will load (part of ControlNet requests' endpoint, so of
        their fingerprint): the tiny model's version, a file's content hash, a folder's
        identity, or `repo@revision`; with `;config=...` when `controlnet_config` is set."""
        from lorascope.harness.providers.controlnet_weights import file_identity

        name = self.config.controlnet
        if not name:
            return None
        if name == "tiny-random":
            from lorascope.harness.providers.tiny_controlnet import TINY_CONTROLNET_REVISION

            return TINY_CONTROLNET_REVISION
        path = Path(name).expanduser()
        if path.is_dir():
            identity = folder_identity(path)
        elif path.is_file():
            identity = f"file-{path.name}-{file_identity(path)}"
        else:
            identity = f"{name}@{self.config.controlnet_revision or 'main'}"
        source = self.config.controlnet_config
        if source:
            folder = Path(source).expanduser()
            identity += f";config={folder_identity(folder) if folder.is_dir() else source}"
        return identity

    def _load_controlnet(self, pipe: Any) -> Any:
        """The ControlNet the settings name, on the pipeline's device and dtype: the tiny
        random one, a single `.safetensors` file (alibaba-pai's release format: checked and
        loaded with its config by `controlnet_weights`), or a diffusers folder / hub repo
        (`from_pretrained`, safetensors only). Every failure is one line saying what to do."""
        import torch

        from lorascope.harness.providers import controlnet_weights

        name = self.config.controlnet
        if not name:
            raise ProviderError(self.provider_name, "mode controlnet needs the `controlnet` setting "
                                "(a .safetensors file, a folder, a hub repo id, or tiny-random)")
        dtype = getattr(torch, self.dtype_name or "float32")
        if name == "tiny-random":
            from lorascope.harness.providers.tiny_controlnet import build_tiny_controlnet

            return build_tiny_controlnet(dtype).to(pipe.device)
        path = Path(name).expanduser()
        refused = controlnet_weights.weights_problem(name)
        try:
            if refused:
                raise controlnet_weights.ControlNetWeightsError(refused)
            if path.is_file():
                model = controlnet_weights.load_single_file(path, self.config.controlnet_config,
                                                            self.config.local_files_only, _dtype_kwarg(dtype))
            else:
                model = controlnet_weights.load_pretrained(name, self.config.controlnet_revision,
                                                           self.config.local_files_only, _dtype_kwarg(dtype))
        except controlnet_weights.ControlNetWeightsError as exc:
            raise ProviderError(self.provider_name, f"cannot load ControlNet: {one_line(exc, 600)}") from None
        except Exception as exc:  # diffusers/hub raise OSError/ValueError/KeyError here
            hint = "" if path.exists() else (" (not a local file or folder; as a hub repo it must be reachable or in "
                                             "the local hub cache)")
            raise ProviderError(self.provider_name, f"cannot load ControlNet {name}{hint}: {one_line(exc, 200)}") from None
        return model.to(pipe.device)

    def take_load_s(self) -> float:
        """The load time, once: the first result after the load reports it, later ones 0."""
        if self._load_reported:
            return 0.0
        self._load_reported = True
        return self.load_s or 0.0

    def _from_pretrained(self, dtype: Any) -> tuple[Any, str]:
        from diffusers import ZImagePipeline

        name = self.provider_name
        model = self.config.model
        folder = Path(model).expanduser()
        if folder.is_dir():
            try:
                pipe = ZImagePipeline.from_pretrained(str(folder), **_dtype_kwarg(dtype))
            except Exception as exc:  # diffusers raises OSError/ValueError/KeyError here
                raise ProviderError(
                    name,
                    f"cannot load a Z-Image pipeline from folder {folder}: {one_line(exc)} "
                    "(expected the diffusers layout: model_index.json, transformer/, vae/, "
                    "text_encoder/, tokenizer/, scheduler/)",
                ) from None
            return pipe, f"local:{folder.resolve()}"
        if not REPO_ID.match(model):
            raise ProviderError(
                name,
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
                name,
                f"cannot load {model}@{self.config.revision or 'main'}: the weights could not be "
                f"fetched from the Hugging Face hub and are not in the local cache "
                f"({type(exc).__name__}: {one_line(exc, 200)}). Download them where the hub is "
                f"reachable (`hf download {model}`) or set model to a local folder in the "
                "diffusers layout.",
            ) from None
        return pipe, _cached_commit(model, self.config.revision) or (self.config.revision or "main")

    def release(self) -> None:
        self.pipe = None
        self._mode_pipes.clear()

    def software(self) -> dict[str, str]:
        """What produced an image: model, loaded revision, library versions, device, dtype."""
        import diffusers
        import peft
        import torch
        import transformers

        device = str(self.device)
        if device.startswith("cuda") and torch.cuda.is_available():
            device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        return {
            "model": self.config.model,
            "revision": self.loaded_revision or "",
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "peft": peft.__version__,
            "transformers": transformers.__version__,
            "device": device,
            "dtype": str(self.dtype_name),
            "compile": str(self.config.compile).lower(),
            "cpu_offload": str(self.config.cpu_offload).lower(),
        }


def folder_identity(folder: Path) -> str:
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
