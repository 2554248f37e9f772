"""LoRA layouts diffusers' Z-Image loader does not take as they are, turned into its own layout.

Why: ComfyUI-style files name Z-Image's original module tree, where q, k and v are one fused
`attention.qkv` Linear and the output projection is `attention.out`. diffusers' converter only
splits those in one key spelling (`.lora.down.weight`); with `lora_A`/`lora_B` or kohya names
the fused keys match no module and the file fails to load. A fused-qkv LoRA is
`delta_qkv = B @ A * alpha/rank` with B stacking q, k and v rows, so each projection gets the
same A and its third of B: exactly the weights a diffusers-layout file would hold.

Works on any array type with slicing and `*` (numpy or torch): this module imports neither.
Names go through `lorascope.registry.inspect.split_key`, the mapping the verdict uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lorascope.registry.inspect import split_key

FUSED_QKV = "attention.qkv"


class LayoutError(ValueError):
    """A file in a layout that cannot be turned into diffusers' (one line, for the user)."""


def fused_modules(keys: Any) -> list[str]:
    """Fused `attention.qkv` modules (diffusers names) among a file's tensor keys."""
    found = set()
    for key in keys:
        split = split_key(key)
        if split and split[0].endswith(FUSED_QKV):
            found.add(split[0])
    return sorted(found)


def needs_conversion(keys: Any) -> bool:
    """True when diffusers cannot load the file as it is (a fused qkv projection)."""
    return bool(fused_modules(keys))


def _contiguous(x: Any) -> Any:
    fn = getattr(x, "contiguous", None)
    return fn() if callable(fn) else x


def _alpha_value(x: Any) -> float:
    item = getattr(x, "item", None)
    return float(item() if callable(item) else x)


def to_diffusers_layout(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """`transformer.<module>.lora_A/B.weight` tensors with alpha folded into A (scale 1).

    Raises LayoutError naming the first module that cannot be converted (a missing half, a
    fused B whose rows are not three equal parts, a key that is not LoRA)."""
    parts: dict[str, dict[str, Any]] = {}
    for key, tensor in state_dict.items():
        split = split_key(key)
        if split is None:
            raise LayoutError(f"key {key!r} is not a LoRA tensor (lora_A/lora_B, lora_down/lora_up or alpha)")
        module, role = split
        if role not in ("down", "up", "alpha"):
            raise LayoutError(f"key {key!r}: {role} tensors (LoKr) cannot be converted")
        parts.setdefault(module, {})[role] = tensor
    out: dict[str, Any] = {}
    for module, roles in parts.items():
        down, up = roles.get("down"), roles.get("up")
        if down is None or up is None:
            missing = "lora_A/lora_down" if down is None else "lora_B/lora_up"
            raise LayoutError(f"{module} lacks its {missing} tensor")
        rank = down.shape[0]
        alpha = roles.get("alpha")
        if alpha is not None:
            down = down * (_alpha_value(alpha) / rank)
        if module.endswith(FUSED_QKV):
            rows = up.shape[0]
            if rows % 3:
                raise LayoutError(f"{module}: lora_B has {rows} rows, not three equal q/k/v parts")
            block = module[: -len("qkv")]
            third = rows // 3
            for i, proj in enumerate(("to_q", "to_k", "to_v")):
                out[f"transformer.{block}{proj}.lora_A.weight"] = _contiguous(down)
                out[f"transformer.{block}{proj}.lora_B.weight"] = _contiguous(up[i * third:(i + 1) * third])
        else:
            out[f"transformer.{module}.lora_A.weight"] = down
            out[f"transformer.{module}.lora_B.weight"] = up
    return out
