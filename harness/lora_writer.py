"""Write LoRA safetensors files that fit a given Z-Image transformer: random low-rank
weights, seeded, in each key format found in the wild (NOTES.md, "LoRA on Z-Image").

Why: tests and the offline demo need LoRAs that fit the tiny model, and the claim "all
three key formats load to the same weights" is only worth something if the same
underlying A/B matrices are written in every format. The writer therefore draws the
weights once (`lora_weights`) and only the key layout differs between formats:

- ``diffusers``  — diffusers/peft: ``transformer.layers.0.attention.to_q.lora_A.weight``
  and ``.lora_B.weight`` (no alpha; peft's default alpha = rank, scaling 1).
- ``ai-toolkit`` — ai-toolkit/ComfyUI: ``diffusion_model.layers.0.attention.to_q.lora_A.weight``
  (no ``.alpha``).
- ``kohya``      — ``lora_unet_layers_0_attention_to_q.lora_down.weight`` / ``.lora_up.weight``
  / ``.alpha``. Alpha is written as rank/2 and lora_down pre-multiplied by 2, so the file
  exercises alpha handling while diffusers' conversion (down * alpha/rank) gives back the
  very same floats (multiplying by powers of two is exact).

Two more layouts seen in the wild (`EXTRA_LAYOUTS`), for the loaders that must handle them:

- ``kohya-no-alpha`` — kohya keys with no ``.alpha`` tensors (as Shakker-Labs/AWPortrait-Z
  ships ai-toolkit keys): alpha = rank, so it loads to the diffusers file's weights.
- ``fused-qkv``  — ComfyUI-style names of Z-Image's original module tree:
  ``diffusion_model.layers.0.attention.qkv.lora_A.weight`` (one A, B of the three
  projections stacked) and ``attention.out`` for ``to_out.0``, with alpha = rank/2 and A
  doubled as in the kohya layout. A fused file has one A for q, k and v, so it is written
  from weights drawn with `shared_qkv_down=True`; the diffusers file written the same way is
  its exact equivalent.

`write_foreign_lora` writes an SDXL-style LoRA (another model family) so tests and the
demo can show the incompatible-LoRA error. numpy + safetensors only: no torch import here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from safetensors.numpy import save_file

KeyFormat = Literal["diffusers", "ai-toolkit", "kohya", "kohya-no-alpha", "fused-qkv"]
KEY_FORMATS: tuple[KeyFormat, ...] = ("diffusers", "ai-toolkit", "kohya")
EXTRA_LAYOUTS: tuple[KeyFormat, ...] = ("kohya-no-alpha", "fused-qkv")

#: Module suffixes a community Z-Image LoRA usually targets inside each block.
DEFAULT_TARGETS: tuple[str, ...] = (
    "attention.to_q",
    "attention.to_k",
    "attention.to_v",
    "attention.to_out.0",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
)
#: Which block lists to cover: the main DiT blocks; add "noise_refiner"/"context_refiner" for more.
DEFAULT_BLOCKS: tuple[str, ...] = ("layers",)

#: (out_features, in_features) per module path.
LinearShapes = Mapping[str, tuple[int, int]]


def linear_shapes(transformer: Any) -> dict[str, tuple[int, int]]:
    """(out, in) of every `nn.Linear` in a transformer module, keyed by its module path."""
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in transformer.named_modules():
        weight = getattr(module, "weight", None)
        if type(module).__name__ == "Linear" and weight is not None and weight.ndim == 2:
            shapes[name] = (int(weight.shape[0]), int(weight.shape[1]))
    return shapes


def _select_modules(
    shapes: LinearShapes, targets: Iterable[str], blocks: Iterable[str]
) -> list[str]:
    targets, blocks = tuple(targets), tuple(blocks)
    chosen = []
    for name in shapes:
        parts = name.split(".")
        if len(parts) < 3 or parts[0] not in blocks or not parts[1].isdigit():
            continue
        if ".".join(parts[2:]) in targets:
            chosen.append(name)
    if not chosen:
        raise ValueError(f"no Linear module matches blocks {blocks} and targets {targets}")
    return sorted(chosen, key=_natural_key)


def _natural_key(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def lora_weights(
    transformer_or_shapes: Any,
    *,
    rank: int = 4,
    seed: int = 0,
    strength: float = 1.0,
    targets: Iterable[str] = DEFAULT_TARGETS,
    blocks: Iterable[str] = DEFAULT_BLOCKS,
    shared_qkv_down: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Module path -> (A [rank, in], B [out, rank]), float32, drawn from `seed`.

    B is not zero (unlike a freshly initialised trainable LoRA) so the LoRA visibly changes
    images; `strength` scales the update B @ A relative to a unit-variance projection.
    `shared_qkv_down`: to_k and to_v reuse to_q's A, as in a LoRA trained on a fused qkv
    projection (the draws are the same either way, so B matrices do not change).
    """
    shapes = (
        dict(transformer_or_shapes)
        if isinstance(transformer_or_shapes, Mapping)
        else linear_shapes(transformer_or_shapes)
    )
    rng = np.random.default_rng(seed)
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in _select_modules(shapes, targets, blocks):
        out_f, in_f = shapes[name]
        a = rng.standard_normal((rank, in_f), dtype=np.float32) / np.float32(np.sqrt(in_f))
        b = rng.standard_normal((out_f, rank), dtype=np.float32) * np.float32(strength / np.sqrt(rank))
        weights[name] = (a, b)
    if shared_qkv_down:
        for name in list(weights):
            if name.endswith(".attention.to_q"):
                block = name[: -len(".to_q")]
                for proj in ("to_k", "to_v"):
                    if f"{block}.{proj}" in weights:
                        weights[f"{block}.{proj}"] = (weights[name][0], weights[f"{block}.{proj}"][1])
    return weights


def _kohya_name(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


def lora_state_dict(
    weights: Mapping[str, tuple[np.ndarray, np.ndarray]], key_format: KeyFormat
) -> dict[str, np.ndarray]:
    """The same A/B matrices laid out in one key format."""
    out: dict[str, np.ndarray] = {}
    for module, (a, b) in weights.items():
        if key_format == "diffusers":
            out[f"transformer.{module}.lora_A.weight"] = a
            out[f"transformer.{module}.lora_B.weight"] = b
        elif key_format == "ai-toolkit":
            out[f"diffusion_model.{module}.lora_A.weight"] = a
            out[f"diffusion_model.{module}.lora_B.weight"] = b
        elif key_format == "kohya":
            rank = a.shape[0]
            name = _kohya_name(module)
            # alpha = rank/2 halves lora_down on load; store it doubled (exact in float).
            out[f"{name}.lora_down.weight"] = a * np.float32(2.0)
            out[f"{name}.lora_up.weight"] = b
            out[f"{name}.alpha"] = np.asarray(rank / 2, dtype=np.float32)
        elif key_format == "kohya-no-alpha":
            name = _kohya_name(module)
            out[f"{name}.lora_down.weight"] = a
            out[f"{name}.lora_up.weight"] = b
        elif key_format == "fused-qkv":
            _fused_entry(out, module, a, b, weights)
        else:
            raise ValueError(f"unknown key format {key_format!r}; known: {', '.join(KEY_FORMATS + EXTRA_LAYOUTS)}")
    return out


def _fused_entry(out: dict[str, np.ndarray], module: str, a: np.ndarray, b: np.ndarray,
                 weights: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """One module in the ComfyUI-style fused layout (q/k/v folded into `attention.qkv`)."""
    rank = a.shape[0]
    block, _, leaf = module.rpartition(".attention.")
    if leaf in ("to_k", "to_v"):
        return  # written with to_q
    if leaf == "to_q":
        parts = [weights.get(f"{block}.attention.{p}") for p in ("to_q", "to_k", "to_v")]
        if any(p is None for p in parts) or any(not np.array_equal(p[0], a) for p in parts):
            raise ValueError(f"{block}: a fused qkv layout needs to_q, to_k and to_v with one shared A "
                             "(draw the weights with shared_qkv_down=True)")
        name, b = f"diffusion_model.{block}.attention.qkv", np.concatenate([p[1] for p in parts], axis=0)
    elif leaf == "to_out.0":
        name = f"diffusion_model.{block}.attention.out"
    else:
        name = f"diffusion_model.{module}"
    out[f"{name}.lora_A.weight"] = a * np.float32(2.0)
    out[f"{name}.lora_B.weight"] = b
    out[f"{name}.alpha"] = np.asarray(rank / 2, dtype=np.float32)


def write_lora(
    path: str | Path,
    transformer_or_shapes: Any,
    *,
    key_format: KeyFormat = "diffusers",
    rank: int = 4,
    seed: int = 0,
    strength: float = 1.0,
    targets: Iterable[str] = DEFAULT_TARGETS,
    blocks: Iterable[str] = DEFAULT_BLOCKS,
    shared_qkv_down: bool | None = None,
) -> Path:
    """Write one LoRA file fitting `transformer_or_shapes`; returns its path.

    `shared_qkv_down` defaults to True for the fused-qkv layout (it needs it) and False
    otherwise; pass True to write the diffusers-layout twin of a fused file."""
    shared = key_format == "fused-qkv" if shared_qkv_down is None else shared_qkv_down
    weights = lora_weights(
        transformer_or_shapes, rank=rank, seed=seed, strength=strength, targets=targets, blocks=blocks,
        shared_qkv_down=shared,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One metadata key only: safetensors writes its metadata map in no fixed order, and a
    # LoRA file's bytes are part of every generation's fingerprint, so two writes of the same
    # LoRA must give the same bytes.
    made_with: dict[str, Any] = {"key_format": key_format, "rank": rank, "seed": seed, "strength": strength}
    if key_format in ("kohya", "fused-qkv"):
        made_with["network_alpha"] = rank / 2
    if shared:
        made_with["shared_qkv_down"] = True
    metadata = {"lorascope_writer": json.dumps(made_with, sort_keys=True)}
    save_file(lora_state_dict(weights, key_format), str(path), metadata=metadata)
    return path


def write_lora_formats(
    directory: str | Path, transformer_or_shapes: Any, *, stem: str = "lora", **kwargs: Any
) -> dict[KeyFormat, Path]:
    """The same LoRA in every key format: `{format: directory/stem.format.safetensors}`."""
    directory = Path(directory)
    return {
        fmt: write_lora(directory / f"{stem}.{fmt}.safetensors", transformer_or_shapes, key_format=fmt, **kwargs)
        for fmt in KEY_FORMATS
    }


def write_foreign_lora(path: str | Path, *, rank: int = 4, seed: int = 0) -> Path:
    """A small SDXL-style kohya LoRA (UNet attention + CLIP text encoder keys): a LoRA for
    another model family, which a Z-Image pipeline must refuse with a clear message."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    modules = {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": (640, 640),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (640, 2048),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2": (1280, 5120),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
    }
    for name, (out_f, in_f) in modules.items():
        tensors[f"{name}.lora_down.weight"] = rng.standard_normal((rank, in_f), dtype=np.float32) * np.float32(0.01)
        tensors[f"{name}.lora_up.weight"] = rng.standard_normal((out_f, rank), dtype=np.float32) * np.float32(0.01)
        tensors[f"{name}.alpha"] = np.asarray(rank, dtype=np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    return path
