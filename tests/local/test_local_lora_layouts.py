"""LoRA layouts beyond diffusers/ai-toolkit/kohya: ComfyUI-style fused `attention.qkv` +
`attention.out`, and kohya files without `.alpha` tensors. Each loads in the local provider
to the same image as its diffusers-layout twin, or is refused in one line naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lorascope.harness.errors import RejectedRequest
from lorascope.harness.lora_writer import lora_weights, lora_state_dict, write_lora
from lorascope.registry.inspect import inspect_file
from lorascope.registry.lora_layouts import LayoutError, needs_conversion, to_diffusers_layout
from local_helpers import with_loras

SHAPES = {
    "layers.0.attention.to_q": (32, 32),
    "layers.0.attention.to_k": (32, 32),
    "layers.0.attention.to_v": (32, 32),
    "layers.0.attention.to_out.0": (32, 32),
    "layers.0.feed_forward.w1": (85, 32),
}


def test_writer_fused_layout_keys_and_shared_down(tmp_path):
    fused = load_file(write_lora(tmp_path / "f.safetensors", SHAPES, key_format="fused-qkv", seed=3))
    assert sorted(fused) == sorted(
        f"diffusion_model.layers.0.{m}.{t}"
        for m in ("attention.qkv", "attention.out", "feed_forward.w1")
        for t in ("lora_A.weight", "lora_B.weight", "alpha")
    )
    assert fused["diffusion_model.layers.0.attention.qkv.lora_B.weight"].shape == (96, 4)
    assert float(fused["diffusion_model.layers.0.attention.qkv.alpha"]) == 2.0
    no_alpha = load_file(write_lora(tmp_path / "n.safetensors", SHAPES, key_format="kohya-no-alpha", seed=3))
    assert not any(k.endswith(".alpha") for k in no_alpha) and "lora_unet_layers_0_attention_to_q.lora_down.weight" in no_alpha
    with pytest.raises(ValueError, match="shared A"):
        lora_state_dict(lora_weights(SHAPES, seed=3), "fused-qkv")


def test_fused_layout_converts_to_exactly_the_diffusers_twin(tmp_path):
    fused = load_file(write_lora(tmp_path / "f.safetensors", SHAPES, key_format="fused-qkv", seed=3))
    twin = load_file(write_lora(tmp_path / "d.safetensors", SHAPES, key_format="diffusers", seed=3, shared_qkv_down=True))
    assert needs_conversion(fused) and not needs_conversion(twin)
    converted = to_diffusers_layout(fused)
    assert sorted(converted) == sorted(twin)
    for key in twin:
        np.testing.assert_array_equal(converted[key], twin[key])


def test_unconvertible_fused_files_say_why(tmp_path):
    fused = load_file(write_lora(tmp_path / "f.safetensors", SHAPES, key_format="fused-qkv", seed=3))
    bad = dict(fused)
    bad["diffusion_model.layers.0.attention.qkv.lora_B.weight"] = np.zeros((95, 4), np.float32)
    with pytest.raises(LayoutError, match="95 rows, not three equal q/k/v parts"):
        to_diffusers_layout(bad)
    half = {k: v for k, v in fused.items() if not k.endswith("qkv.lora_A.weight")}
    with pytest.raises(LayoutError, match="layers.0.attention.qkv lacks its lora_A/lora_down tensor"):
        to_diffusers_layout(half)


async def test_fused_and_no_alpha_files_give_the_diffusers_twins_image(tiny_provider, base_request, tmp_path):
    transformer = tiny_provider.load_pipeline().transformer
    fused = write_lora(tmp_path / "fused.safetensors", transformer, key_format="fused-qkv", seed=5)
    twin = write_lora(tmp_path / "twin.safetensors", transformer, key_format="diffusers", seed=5, shared_qkv_down=True)
    no_alpha = write_lora(tmp_path / "noalpha.safetensors", transformer, key_format="kohya-no-alpha", seed=6)
    plain = write_lora(tmp_path / "plain.safetensors", transformer, key_format="diffusers", seed=6)
    from lorascope.harness.providers.tiny_zimage import TRANSFORMER_CONFIG

    # the header verdict the provider checks first (and `registry inspect` prints) accepts them
    for path in (fused, no_alpha):
        verdict = inspect_file(path, config=TRANSFORMER_CONFIG).compatibility
        assert verdict.verdict == "compatible", verdict.reason
    base = await tiny_provider.generate(base_request)
    images = {}
    for name, path in (("fused", fused), ("twin", twin), ("no_alpha", no_alpha), ("plain", plain)):
        images[name] = (await tiny_provider.generate(with_loras(base_request, (path, 0.7)))).images[0].data
    assert images["fused"] == images["twin"] != base.images[0].data
    assert images["no_alpha"] == images["plain"] != base.images[0].data


async def test_a_broken_fused_file_is_refused_in_one_line_naming_it(base_request, tmp_path, monkeypatch):
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random"})
    transformer = provider.load_pipeline().transformer
    tensors = load_file(write_lora(tmp_path / "f.safetensors", transformer, key_format="fused-qkv", seed=5))
    tensors["diffusion_model.layers.1.attention.qkv.lora_B.weight"] = np.zeros((95, 4), np.float32)
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))
    with pytest.raises(RejectedRequest) as caught:  # the header check sees the mismatch
        await provider.generate(with_loras(base_request, (broken, 1.0)))
    message = str(caught.value)
    assert "\n" not in message and str(broken) in message and "shape mismatch" in message
    provider = DiffusersProvider({"model": "tiny-random"})  # a fresh one: verdicts are cached per file
    monkeypatch.setattr(provider, "_header_incompatibility", lambda path: None)
    with pytest.raises(RejectedRequest) as caught:  # and without it, the converter says why
        await provider.generate(with_loras(base_request, (broken, 1.0)))
    message = str(caught.value)
    assert "\n" not in message and str(broken) in message
    assert "unsupported LoRA layout: layers.1.attention.qkv: lora_B has 95 rows" in message
    assert provider.loaded_adapters == {}


async def test_a_fused_file_hot_swaps_into_a_slot_like_its_twin(tiny_provider, base_request, tmp_path):
    """Hotswap mode (what `compile` uses) takes the converted tensors too."""
    from lorascope.harness.providers.local import DiffusersProvider
    from local_helpers import mean_abs_diff

    transformer = tiny_provider.load_pipeline().transformer
    plain = write_lora(tmp_path / "plain.safetensors", transformer, seed=8)
    fused = write_lora(tmp_path / "fused.safetensors", transformer, key_format="fused-qkv", seed=5)
    twin = write_lora(tmp_path / "twin.safetensors", transformer, seed=5, shared_qkv_down=True)
    provider = DiffusersProvider({"model": "tiny-random", "hotswap": True, "hotswap_target_rank": 8})
    await provider.generate(with_loras(base_request, (plain, 0.8)))  # slot0 holds another file first
    swapped = await provider.generate(with_loras(base_request, (fused, 0.8)))
    assert set(provider.loaded_adapters) == {"slot0"} and provider.lora_loads == 2
    reference = await tiny_provider.generate(with_loras(base_request, (twin, 0.8)))
    assert mean_abs_diff(swapped, reference) < 0.05  # hot-swapped scaling tensors, as for any file
