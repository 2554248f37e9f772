"""The LoRA files behind `evals/suites/tiny-styles.yaml`: random low-rank weights that fit
the tiny random Z-Image transformer (harness.providers.tiny_zimage), written by the
harness's own LoRA writer with fixed seeds.

They are committed (a few KB each) so the suite runs as written, offline. If the tiny
pipeline's recipe changes, `python -m lorascope.evals.tiny_assets` rewrites them, and the eval test
that checks them says so.
"""

from __future__ import annotations

from pathlib import Path

TINY_DIR = Path(__file__).resolve().parent / "suites" / "tiny"
#: catalogue id -> (file name, writer seed, strength)
TINY_LORAS: dict[str, tuple[str, int, float]] = {
    "tiny-ink": ("tiny-ink.safetensors", 11, 2.0),
    "tiny-neon": ("tiny-neon.safetensors", 12, 2.0),
}


def write_tiny_loras(directory: Path = TINY_DIR) -> dict[str, Path]:
    """(Re)write the tiny LoRA files into `directory`; returns {id: path}."""
    from lorascope.harness.lora_writer import linear_shapes, write_lora
    from lorascope.harness.providers.tiny_zimage import build_tiny_pipeline

    shapes = linear_shapes(build_tiny_pipeline().transformer)
    return {
        lora_id: write_lora(Path(directory) / name, shapes, seed=seed, strength=strength)
        for lora_id, (name, seed, strength) in TINY_LORAS.items()
    }


if __name__ == "__main__":
    for lora_id, path in write_tiny_loras().items():
        print(f"{lora_id}: {path}")
