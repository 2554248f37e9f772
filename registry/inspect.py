"""Header-only LoRA inspection: format, ranks, alphas, targets, dtypes, and a Z-Image verdict.

Nothing here loads the weight tensors or imports torch: the safetensors header (8-byte length
+ JSON) gives every key, dtype and shape. Local files also give the tiny `.alpha` scalars (a
few bytes each, read by offset). Remote files are read with huggingface_hub's range requests
(`HfApi.parse_safetensors_file_metadata`), so nothing is downloaded.

The verdict compares the LoRA's module names and in/out features with the Linear layers of
Z-Image's transformer computed from its config (`lorascope.registry.zimage`), after mapping kohya and
ai-toolkit names to diffusers' names the way diffusers' own converter does.
"""

from __future__ import annotations

import os
import re
import struct
from collections import defaultdict
from math import prod
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from lorascope.registry.digest import sha256_file
from lorascope.registry.safetensors_header import read_header_from
from lorascope.registry.zimage import ZIMAGE_TURBO_CONFIG, zimage_linears

KeyFormat = Literal["diffusers", "ai-toolkit", "kohya", "lokr", "unknown"]
Verdict = Literal["compatible", "incompatible", "unknown"]

LORA_SUFFIXES = {
    ".lora_A.weight": "down",
    ".lora_B.weight": "up",
    ".lora_down.weight": "down",
    ".lora_up.weight": "up",
    ".alpha": "alpha",
}
LOKR_ROLES = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
PREFIXES = ("transformer.", "diffusion_model.", "base_model.model.", "model.")
_PROTECTED = (("to", "q"), ("to", "k"), ("to", "v"), ("to", "out"), ("feed", "forward"))
_FIXUPS = {
    "context.refiner.": "context_refiner.",
    "noise.refiner.": "noise_refiner.",
    "siglip.refiner.": "siglip_refiner.",
    "adaLN.modulation.": "adaLN_modulation.",
    "all.final.layer.": "all_final_layer.",
    "all.x.embedder.": "all_x_embedder.",
    "cap.embedder.": "cap_embedder.",
    "t.embedder.": "t_embedder.",
    "siglip.embedder.": "siglip_embedder.",
}
_DTYPE_SCALAR = {"F32": "<f", "F16": "<e", "F64": "<d"}


class ModuleLora(BaseModel):
    """One adapted Linear, named as in diffusers' ZImageTransformer2DModel."""

    name: str
    kind: Literal["lora", "lokr"] = "lora"
    rank: int | None = None
    alpha: float | None = None
    in_features: int | None = None
    out_features: int | None = None
    missing: list[str] = Field(default_factory=list)  # e.g. ["up"] when a half is absent


class Compatibility(BaseModel):
    verdict: Verdict
    reason: str


class LoraInspection(BaseModel):
    source: str
    key_format: KeyFormat
    ranks: list[int]
    alphas: list[float]
    targets: list[str]  # module families, e.g. attention.to_q, feed_forward.w1, adaLN_modulation
    blocks: dict[str, int]  # block group -> how many of its blocks are adapted
    dtypes: list[str]
    parameter_count: int
    tensor_count: int
    file_size: int | None
    sha256: str | None
    metadata: dict[str, str]
    foreign_model: str | None = None  # the model family the keys belong to, when not Z-Image
    unrecognised_keys: list[str] = Field(default_factory=list)  # a sample
    modules: list[ModuleLora] = Field(default_factory=list)
    compatibility: Compatibility


# ----------------------------------------------------------------------------- key parsing


def key_format_of(keys: list[str]) -> KeyFormat:
    if any(".lokr_" in k for k in keys):
        return "lokr"
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        return "kohya"
    if any(k.startswith("diffusion_model.") for k in keys):
        return "ai-toolkit"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "diffusers"
    if any(".lora_down." in k or ".lora_up." in k for k in keys):
        return "kohya"
    return "unknown"


def _kohya_to_dotted(base: str) -> str:
    """`layers_0_attention_to_q` -> `layers.0.attention.to_q` (diffusers' converter's rule)."""
    parts = base.split("_")
    merged: list[str] = []
    i = 0
    while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) in _PROTECTED:
            merged.append(f"{parts[i]}_{parts[i + 1]}")
            i += 2
        else:
            merged.append(parts[i])
            i += 1
    return ".".join(merged)


def split_key(key: str) -> tuple[str, str] | None:
    """(diffusers module name, role) for a LoRA/LoKr tensor key; None when it is neither."""
    k = key.replace("default.", "")
    role = None
    for suffix, r in LORA_SUFFIXES.items():
        if k.endswith(suffix):
            k, role = k[: -len(suffix)], r
            break
    else:
        m = re.search(r"\.(lokr_(?:w[12](?:_[ab])?|t2))$", k)
        if not m:
            return None
        k, role = k[: m.start()], m.group(1)
    if k.startswith("lora_unet_"):
        k = _kohya_to_dotted(k.removeprefix("lora_unet_"))
    for prefix in PREFIXES:
        if k.startswith(prefix):
            k = k.removeprefix(prefix)
            break
    if ".to_out" not in k:
        k = re.sub(r"\.out$", ".to_out.0", k)
    elif k.endswith(".to_out"):
        k += ".0"
    for dotted, underscored in _FIXUPS.items():
        k = k.replace(dotted, underscored)
    return k, role


FOREIGN_RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("SDXL", re.compile(r"lora_te2_|text_encoder_2|(^|[._])te2[._]"),
     "UNet down/up blocks and two text encoders (te1/te2)"),
    ("Stable Diffusion (UNet)", re.compile(r"down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block"),
     "UNet down/up/mid blocks"),
    ("Qwen-Image", re.compile(r"transformer_blocks\.\d+\.(img_mlp|txt_mlp|img_mod|txt_mod)"),
     "dual-stream blocks with img_mlp/txt_mlp"),
    ("Stable Diffusion 3", re.compile(r"joint_blocks|context_block"), "MMDiT joint_blocks"),
    ("FLUX", re.compile(r"double_blocks|single_blocks|single_transformer_blocks|ff_context|add_q_proj|to_added_qkv"),
     "double/single-stream blocks (transformer_blocks + single_transformer_blocks)"),
    ("Wan (video)", re.compile(r"(^|\.)blocks\.\d+\.(self_attn|cross_attn)"), "blocks.N.self_attn/cross_attn"),
    ("a text encoder", re.compile(r"^lora_te_|^lora_te1_|text_encoder|text_model"), "text-encoder keys"),
]


def foreign_model_of(keys: list[str]) -> tuple[str, str] | None:
    """(model family, why) when the keys belong to another model's architecture."""
    for family, pattern, why in FOREIGN_RULES:
        hits = [k for k in keys if pattern.search(k)]
        if hits:
            if family == "SDXL" and not any(FOREIGN_RULES[1][1].search(k) for k in keys):
                why = "two text encoders (te1/te2)"
            return family, f"{why}, e.g. {hits[0]!r}"
    return None


# ----------------------------------------------------------------------------- inspection


def _scalar(raw: bytes, dtype: str) -> float | None:
    if dtype == "BF16" and len(raw) == 2:
        return struct.unpack("<f", b"\x00\x00" + raw)[0]
    fmt = _DTYPE_SCALAR.get(dtype)
    if fmt and len(raw) == struct.calcsize(fmt):
        return float(struct.unpack(fmt, raw)[0])
    return None


def _metadata_alpha(metadata: dict[str, str]) -> float | None:
    for key in ("ss_network_alpha", "lora_alpha", "alpha"):
        try:
            return float(metadata[key])
        except (KeyError, ValueError):
            continue
    return None


def inspect_header(
    header: dict[str, Any],
    *,
    source: str,
    file_size: int | None = None,
    sha256: str | None = None,
    alpha_values: dict[str, float] | None = None,
    config: dict[str, Any] | None = None,
) -> LoraInspection:
    """Inspect a parsed safetensors header; `alpha_values` maps `.alpha` keys to their values."""
    metadata = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
    tensors = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    keys = list(tensors)
    alpha_values = alpha_values or {}
    default_alpha = _metadata_alpha(metadata)

    parts: dict[str, dict[str, list[int]]] = defaultdict(dict)
    alphas: dict[str, float] = {}
    unrecognised: list[str] = []
    for key, info in tensors.items():
        split = split_key(key)
        if split is None:
            unrecognised.append(key)
            continue
        module, role = split
        if role == "alpha":
            if key in alpha_values:
                alphas[module] = alpha_values[key]
            parts[module].setdefault("alpha", [])
        else:
            parts[module][role] = list(info.get("shape", []))

    modules = [_module(name, roles, alphas.get(name, default_alpha)) for name, roles in parts.items()]
    modules.sort(key=lambda m: _natural(m.name))
    families, blocks = _families(m.name for m in modules)
    inspection = LoraInspection(
        source=source,
        key_format=key_format_of(keys),
        ranks=sorted({m.rank for m in modules if m.rank is not None}),
        alphas=sorted({m.alpha for m in modules if m.alpha is not None}),
        targets=families,
        blocks=blocks,
        dtypes=sorted({str(t.get("dtype")) for t in tensors.values()}),
        parameter_count=sum(prod(t.get("shape", [])) for t in tensors.values()),
        tensor_count=len(tensors),
        file_size=file_size,
        sha256=sha256,
        metadata=metadata,
        foreign_model=(foreign := foreign_model_of(keys)) and foreign[0],
        unrecognised_keys=unrecognised[:10],
        modules=modules,
        compatibility=Compatibility(verdict="unknown", reason="not checked"),
    )
    inspection.compatibility = check_compatibility(inspection, config, _foreign_reason=foreign)
    return inspection


def _module(name: str, roles: dict[str, list[int]], alpha: float | None) -> ModuleLora:
    if any(r.startswith("lokr_") for r in roles):
        w1, w2 = roles.get("lokr_w1"), roles.get("lokr_w2")
        if w1 is None and "lokr_w1_a" in roles and "lokr_w1_b" in roles:
            w1 = [roles["lokr_w1_a"][0], roles["lokr_w1_b"][-1]]
        if w2 is None and "lokr_w2_a" in roles and "lokr_w2_b" in roles:
            w2 = [roles["lokr_w2_a"][0], roles["lokr_w2_b"][1]]
        rank = (roles.get("lokr_w2_a") or roles.get("lokr_w1_a") or [None, None])[1]
        shape_ok = w1 is not None and w2 is not None and len(w1) >= 2 and len(w2) >= 2
        return ModuleLora(
            name=name, kind="lokr", rank=rank, alpha=alpha,
            in_features=w1[1] * w2[1] if shape_ok else None,
            out_features=w1[0] * w2[0] if shape_ok else None,
            missing=[] if shape_ok else ["lokr_w1/lokr_w2"],
        )
    down, up = roles.get("down"), roles.get("up")
    return ModuleLora(
        name=name, rank=down[0] if down else (up[1] if up and len(up) > 1 else None), alpha=alpha,
        in_features=down[1] if down and len(down) > 1 else None,
        out_features=up[0] if up else None,
        missing=[r for r, v in (("down", down), ("up", up)) if v is None],
    )


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _families(names: Any) -> tuple[list[str], dict[str, int]]:
    families: set[str] = set()
    blocks: dict[str, set[str]] = defaultdict(set)
    for name in names:
        m = re.match(r"^(layers|noise_refiner|context_refiner|siglip_refiner)\.(\d+)\.(.+)$", name)
        if m:
            blocks[m.group(1)].add(m.group(2))
            family = m.group(3)
        else:
            family = name
        families.add(re.sub(r"\.0$", "", family))
    return sorted(families), {g: len(ids) for g, ids in sorted(blocks.items())}


def check_compatibility(
    inspection: LoraInspection,
    transformer_config: dict[str, Any] | None = None,
    *,
    _foreign_reason: tuple[str, str] | None = None,
) -> Compatibility:
    """Does this LoRA fit a Z-Image transformer with this config (default: Z-Image Turbo's)?"""
    cfg = {**ZIMAGE_TURBO_CONFIG, **(transformer_config or {})}
    model = "Z-Image Turbo" if transformer_config is None else "the given Z-Image config"
    if inspection.foreign_model:
        why = _foreign_reason[1] if _foreign_reason else "its keys"
        return Compatibility(
            verdict="incompatible",
            reason=f"made for {inspection.foreign_model}, not Z-Image: {why}; "
            "Z-Image Turbo is a single-stream DiT (layers.N.attention / feed_forward)",
        )
    mods = inspection.modules
    if not mods:
        if inspection.tensor_count == 0:
            return Compatibility(verdict="unknown", reason="the file holds no tensors")
        sample = inspection.unrecognised_keys[0] if inspection.unrecognised_keys else "?"
        return Compatibility(
            verdict="unknown",
            reason=f"no LoRA/LoKr tensors recognised among {inspection.tensor_count} keys (e.g. {sample!r})",
        )
    fused = [m.name for m in mods if m.name.endswith(".qkv")]
    mods = _unfused(mods)  # a fused q/k/v projection is checked as the three it stands for
    incomplete = [m for m in mods if m.missing]
    if incomplete:
        m = incomplete[0]
        return Compatibility(verdict="incompatible", reason=f"{m.name} lacks its {'/'.join(m.missing)} tensor")
    expected = zimage_linears(cfg)
    unknown = [m.name for m in mods if m.name not in expected]
    if unknown:
        where = f"{model}'s transformer ({cfg['n_layers']} layers, {cfg['n_refiner_layers']} refiner layers each)"
        head = f"none of its {len(mods)} modules exist" if len(unknown) == len(mods) else (
            f"{len(unknown)} of its {len(mods)} modules do not exist"
        )
        return Compatibility(verdict="incompatible", reason=f"{head} in {where}, e.g. {unknown[0]!r}")
    wrong = [m for m in mods if (m.in_features, m.out_features) != expected[m.name]]
    if wrong:
        m = wrong[0]
        exp_in, exp_out = expected[m.name]
        return Compatibility(
            verdict="incompatible",
            reason=f"shape mismatch in {len(wrong)} of {len(mods)} modules: {m.name} is "
            f"{m.in_features}->{m.out_features} in the file, {exp_in}->{exp_out} in {model} (dim {cfg['dim']})",
        )
    note = (f"; its {len(fused)} fused attention.qkv modules are split into to_q/to_k/to_v when loaded"
            if fused else "")
    return Compatibility(
        verdict="compatible",
        reason=f"all {len(mods)} modules ({', '.join(inspection.targets[:6])}"
        f"{', ...' if len(inspection.targets) > 6 else ''}) match {model}'s transformer "
        f"(dim {cfg['dim']}) in name and shape{note}",
    )


def _unfused(mods: list[ModuleLora]) -> list[ModuleLora]:
    """A fused `attention.qkv` module (ComfyUI-style names) as its to_q/to_k/to_v parts, each
    with a third of the output rows; an output count not divisible by 3 keeps the mismatch."""
    out: list[ModuleLora] = []
    for m in mods:
        if not m.name.endswith("attention.qkv"):
            out.append(m)
            continue
        rows = m.out_features
        part = rows // 3 if rows is not None and rows % 3 == 0 else rows
        base = m.name[: -len("qkv")]
        out += [m.model_copy(update={"name": base + proj, "out_features": part}) for proj in ("to_q", "to_k", "to_v")]
    return out


def inspect_file(path: Path | str, *, config: dict[str, Any] | None = None, with_sha256: bool = True) -> LoraInspection:
    """Inspect a local safetensors file from its header (plus the few bytes of `.alpha` scalars)."""
    path = Path(path)
    with open(path, "rb") as fh:
        header = read_header_from(fh)
        data_start = fh.tell()
        alpha_values: dict[str, float] = {}
        for key, info in header.items():
            if key.endswith(".alpha") and isinstance(info, dict) and prod(info.get("shape", [])) == 1:
                start, end = info.get("data_offsets", [0, 0])
                fh.seek(data_start + start)
                value = _scalar(fh.read(end - start), str(info.get("dtype")))
                if value is not None:
                    alpha_values[key] = value
    return inspect_header(
        header,
        source=str(path),
        file_size=path.stat().st_size,
        sha256=sha256_file(path) if with_sha256 else None,
        alpha_values=alpha_values,
        config=config,
    )


def hf_api() -> Any:
    """An HfApi honouring HF_ENDPOINT / HF_TOKEN as set now (not at import time)."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)


def inspect_remote(
    repo: str, file: str, revision: str | None = None, *, config: dict[str, Any] | None = None
) -> LoraInspection:
    """Inspect a file on the Hub through range requests for its header; nothing is downloaded."""
    meta = hf_api().parse_safetensors_file_metadata(repo, file, revision=revision)
    header: dict[str, Any] = {"__metadata__": dict(meta.metadata or {})}
    for name, info in meta.tensors.items():
        header[name] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": list(info.data_offsets)}
    return inspect_header(header, source=f"{repo}/{file}@{revision or 'main'}", config=config)
