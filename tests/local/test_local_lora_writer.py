"""The LoRA writer: key layouts of each format, same underlying weights, seeded."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from safetensors.numpy import load_file

from lorascope.harness.lora_writer import lora_weights, write_foreign_lora, write_lora, write_lora_formats

SHAPES = {
    "layers.0.attention.to_q": (32, 32),
    "layers.0.attention.to_out.0": (32, 32),
    "layers.0.feed_forward.w1": (85, 32),
    "layers.1.attention.to_q": (32, 32),
    "noise_refiner.0.attention.to_q": (32, 32),
    "t_embedder.mlp.0": (256, 256),
}


def test_each_format_has_its_key_layout(tmp_path):
    files = write_lora_formats(tmp_path, SHAPES, rank=4, seed=3)
    diffusers = load_file(files["diffusers"])
    toolkit = load_file(files["ai-toolkit"])
    kohya = load_file(files["kohya"])
    assert sorted(diffusers) == sorted(
        f"transformer.{m}.lora_{ab}.weight"
        for m in ("layers.0.attention.to_q", "layers.0.attention.to_out.0", "layers.0.feed_forward.w1", "layers.1.attention.to_q")
        for ab in "AB"
    )
    assert all(k.startswith("diffusion_model.") for k in toolkit) and not any(k.endswith(".alpha") for k in toolkit)
    assert "lora_unet_layers_0_attention_to_out_0.lora_down.weight" in kohya
    assert "lora_unet_layers_0_feed_forward_w1.alpha" in kohya
    assert diffusers["transformer.layers.0.feed_forward.w1.lora_B.weight"].shape == (85, 4)
    assert diffusers["transformer.layers.0.feed_forward.w1.lora_A.weight"].shape == (4, 32)


def test_formats_hold_the_same_weights_after_alpha(tmp_path):
    files = write_lora_formats(tmp_path, SHAPES, rank=4, seed=3)
    diffusers, kohya = load_file(files["diffusers"]), load_file(files["kohya"])
    name = "lora_unet_layers_1_attention_to_q"
    alpha, rank = float(kohya[f"{name}.alpha"]), kohya[f"{name}.lora_down.weight"].shape[0]
    # diffusers' converter multiplies lora_down by alpha/rank: the result is the same floats.
    np.testing.assert_array_equal(
        kohya[f"{name}.lora_down.weight"] * np.float32(alpha / rank),
        diffusers["transformer.layers.1.attention.to_q.lora_A.weight"],
    )
    np.testing.assert_array_equal(
        kohya[f"{name}.lora_up.weight"], diffusers["transformer.layers.1.attention.to_q.lora_B.weight"]
    )


def test_seeded_and_seed_sensitive(tmp_path):
    a = lora_weights(SHAPES, seed=1)["layers.0.attention.to_q"][1]
    b = lora_weights(SHAPES, seed=1)["layers.0.attention.to_q"][1]
    c = lora_weights(SHAPES, seed=2)["layers.0.attention.to_q"][1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    refiners = lora_weights(SHAPES, blocks=("layers", "noise_refiner"))
    assert "noise_refiner.0.attention.to_q" in refiners


def test_foreign_lora_has_sdxl_keys(tmp_path):
    tensors = load_file(write_foreign_lora(tmp_path / "sdxl.safetensors"))
    assert any(k.startswith("lora_unet_down_blocks_") for k in tensors)
    assert any(k.startswith("lora_te1_") for k in tensors)
    assert not any("layers_0_attention" in k for k in tensors)


def test_write_lora_records_how_it_was_made(tmp_path):
    from safetensors import safe_open

    path = write_lora(tmp_path / "x.safetensors", SHAPES, key_format="kohya", rank=2, seed=9)
    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata()
    made_with = json.loads(meta["lorascope_writer"])
    assert made_with["seed"] == 9 and made_with["rank"] == 2 and made_with["network_alpha"] == 1.0


def test_write_lora_is_byte_identical_across_writes(tmp_path):
    """The file's sha256 is part of every fingerprint: rewriting the same LoRA must not
    change it, or a re-run would pay for every LoRA cell again."""
    digests = set()
    for i in range(5):
        path = write_lora(tmp_path / f"x{i}.safetensors", SHAPES, key_format="kohya", rank=2, seed=3)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
