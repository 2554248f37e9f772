"""A project folder for image-conditioned runs on the tiny diffusers pipeline: one real LoRA
file (`style`, written against the tiny transformer) in a catalogue, and an `in/` folder for
the input pictures. Shared by the mode, fidelity and report tests."""

from __future__ import annotations

from pathlib import Path

STYLE_CATALOGUE = (
    "version: 1\nloras:\n  - id: style\n    name: Style\n    source: {path: loras/style.safetensors}\n"
    "    kind: style\n    triggers: [st7le]\n    scale: {recommended: 1.0, range: [0.0, 2.0]}\n")


def write_style_project(project: Path) -> Path:
    """`project` with loras/style.safetensors, loras.yaml and an empty in/; returns it."""
    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.providers.local import DiffusersProvider

    (project / "in").mkdir(parents=True, exist_ok=True)
    transformer = DiffusersProvider({"model": "tiny-random"}).load_pipeline().transformer
    write_lora(project / "loras" / "style.safetensors", transformer, seed=3)
    (project / "loras.yaml").write_text(STYLE_CATALOGUE)
    return project
