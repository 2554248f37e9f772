"""Z-Image's transformer linears (name -> in/out features), computed from its config.

Mirrors diffusers' `models/transformers/transformer_z_image.py` (ZImageTransformer2DModel,
ZImageTransformerBlock, FeedForward, FinalLayer, TimestepEmbedder) without importing torch, so
a LoRA's module names and shapes can be checked against the model header-only.
"""

from __future__ import annotations

from typing import Any

ADALN_EMBED_DIM = 256  # diffusers' ADALN_EMBED_DIM
T_EMBED_MID = 1024  # TimestepEmbedder(mid_size=1024)

# Tongyi-MAI/Z-Image-Turbo transformer/config.json (diffusers defaults are the same values).
ZIMAGE_TURBO_CONFIG: dict[str, Any] = {
    "all_patch_size": [2],
    "all_f_patch_size": [1],
    "in_channels": 16,
    "dim": 3840,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "cap_feat_dim": 2560,
    "siglip_feat_dim": None,
    "axes_dims": [32, 48, 48],
}

BLOCK_GROUPS = ("layers", "noise_refiner", "context_refiner", "siglip_refiner")


def _block(prefix: str, dim: int, n_heads: int, modulation: bool) -> dict[str, tuple[int, int]]:
    inner = (dim // n_heads) * n_heads  # diffusers' Attention gets no kv_heads: k/v are full width
    hidden = int(dim / 3 * 8)
    linears = {
        f"{prefix}.attention.to_q": (dim, inner),
        f"{prefix}.attention.to_k": (dim, inner),
        f"{prefix}.attention.to_v": (dim, inner),
        f"{prefix}.attention.to_out.0": (inner, dim),
        f"{prefix}.feed_forward.w1": (dim, hidden),
        f"{prefix}.feed_forward.w2": (hidden, dim),
        f"{prefix}.feed_forward.w3": (dim, hidden),
    }
    if modulation:
        linears[f"{prefix}.adaLN_modulation.0"] = (min(dim, ADALN_EMBED_DIM), 4 * dim)
    return linears


def zimage_linears(config: dict[str, Any] | None = None) -> dict[str, tuple[int, int]]:
    """Every nn.Linear of a Z-Image transformer: diffusers module name -> (in, out)."""
    cfg = {**ZIMAGE_TURBO_CONFIG, **(config or {})}
    dim, n_heads = int(cfg["dim"]), int(cfg["n_heads"])
    linears: dict[str, tuple[int, int]] = {}
    for i in range(int(cfg["n_layers"])):
        linears.update(_block(f"layers.{i}", dim, n_heads, modulation=True))
    for i in range(int(cfg["n_refiner_layers"])):
        linears.update(_block(f"noise_refiner.{i}", dim, n_heads, modulation=True))
        linears.update(_block(f"context_refiner.{i}", dim, n_heads, modulation=False))
        if cfg.get("siglip_feat_dim"):
            linears.update(_block(f"siglip_refiner.{i}", dim, n_heads, modulation=False))
    adaln = min(dim, ADALN_EMBED_DIM)
    linears["t_embedder.mlp.0"] = (256, T_EMBED_MID)
    linears["t_embedder.mlp.2"] = (T_EMBED_MID, adaln)
    linears["cap_embedder.1"] = (int(cfg["cap_feat_dim"]), dim)
    if cfg.get("siglip_feat_dim"):
        linears["siglip_embedder.1"] = (int(cfg["siglip_feat_dim"]), dim)
    channels = int(cfg["in_channels"])
    for p, f in zip(cfg["all_patch_size"], cfg["all_f_patch_size"]):
        key = f"{p}-{f}"
        linears[f"all_x_embedder.{key}"] = (f * p * p * channels, dim)
        linears[f"all_final_layer.{key}.linear"] = (dim, p * p * f * channels)
        linears[f"all_final_layer.{key}.adaLN_modulation.1"] = (adaln, dim)
    return linears
