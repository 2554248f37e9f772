"""Header-only inspection of tiny LoRA files in every key format, and the Z-Image verdict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from registry_builders import (
    TINY_CONFIG,
    FakeHub,
    flux_tensors,
    lora_tensors,
    sdxl_tensors,
    sha256_bytes,
    write_safetensors,
    zimage_block_linears,
)

from lorascope.registry.inspect import check_compatibility, inspect_file, inspect_remote, split_key
from lorascope.registry.zimage import ZIMAGE_TURBO_CONFIG, zimage_linears

FAMILIES = ["adaLN_modulation", "attention.to_k", "attention.to_out", "attention.to_q", "attention.to_v",
            "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]


@pytest.mark.parametrize("fmt", ["diffusers", "ai-toolkit", "kohya", "lokr"])
def test_each_format_against_tiny_config(tmp_path: Path, fmt: str) -> None:
    path = write_safetensors(tmp_path / f"{fmt}.safetensors", lora_tensors(fmt, rank=4, alpha=2.0),
                             metadata={"ss_network_dim": "4"})
    ins = inspect_file(path, config=TINY_CONFIG)
    assert ins.key_format == fmt
    assert ins.ranks == [4]
    assert ins.targets == FAMILIES
    assert ins.blocks == {"context_refiner": 1, "layers": 2, "noise_refiner": 1}
    assert len(ins.modules) == len(zimage_block_linears()) == 31
    assert ins.dtypes == ["F32"] and ins.metadata == {"ss_network_dim": "4"}
    assert ins.file_size == path.stat().st_size and ins.sha256 == sha256_bytes(path.read_bytes())
    expected_params = sum(int(np.prod(t.shape)) for t in lora_tensors(fmt, rank=4, alpha=2.0).values())
    assert ins.parameter_count == expected_params
    assert ins.alphas == ([2.0] if fmt in ("kohya", "lokr") else [])  # ai-toolkit/diffusers store none
    assert ins.compatibility.verdict == "compatible", ins.compatibility.reason
    # the same file against the real Z-Image Turbo: right names, wrong width
    real = check_compatibility(ins)
    assert real.verdict == "incompatible"
    assert "shape mismatch" in real.reason and "3840" in real.reason


def test_real_turbo_shaped_lora_is_compatible(tmp_path: Path) -> None:
    # one rank-1 module per family over all 30 layers would be big; a header is all we need
    tensors = {}
    for name, (fan_in, fan_out) in zimage_block_linears(ZIMAGE_TURBO_CONFIG).items():
        if name.startswith("layers.29.") or name.startswith("context_refiner.1."):
            tensors[f"diffusion_model.{name}.lora_A.weight"] = np.zeros((1, fan_in), np.float16)
            tensors[f"diffusion_model.{name}.lora_B.weight"] = np.zeros((fan_out, 1), np.float16)
    ins = inspect_file(write_safetensors(tmp_path / "turbo.safetensors", tensors))
    assert ins.compatibility.verdict == "compatible", ins.compatibility.reason
    assert "Z-Image Turbo" in ins.compatibility.reason and "3840" in ins.compatibility.reason
    assert ins.blocks == {"context_refiner": 1, "layers": 1}


def test_sdxl_lora_gets_one_line_verdict(tmp_path: Path) -> None:
    ins = inspect_file(write_safetensors(tmp_path / "sdxl.safetensors", sdxl_tensors()))
    assert ins.key_format == "kohya" and ins.foreign_model == "SDXL"
    assert ins.compatibility.verdict == "incompatible"
    reason = ins.compatibility.reason
    assert "\n" not in reason and reason.startswith("made for SDXL") and "text encoders" in reason
    assert ins.dtypes == ["F16"]


def test_flux_lora_named_as_flux(tmp_path: Path) -> None:
    ins = inspect_file(write_safetensors(tmp_path / "flux.safetensors", flux_tensors()))
    assert ins.key_format == "diffusers" and ins.foreign_model == "FLUX"
    assert ins.compatibility.verdict == "incompatible" and ins.compatibility.reason.startswith("made for FLUX")


def test_structural_problems(tmp_path: Path) -> None:
    base = lora_tensors("diffusers")
    extra = dict(base)
    extra["transformer.layers.7.attention.to_q.lora_A.weight"] = np.zeros((4, 32), np.float32)
    extra["transformer.layers.7.attention.to_q.lora_B.weight"] = np.zeros((32, 4), np.float32)
    ins = inspect_file(write_safetensors(tmp_path / "deep.safetensors", extra), config=TINY_CONFIG)
    assert ins.compatibility.verdict == "incompatible"
    assert "1 of its 32 modules do not exist" in ins.compatibility.reason and "layers.7" in ins.compatibility.reason

    half = {k: v for k, v in base.items() if k != "transformer.layers.0.attention.to_q.lora_B.weight"}
    ins = inspect_file(write_safetensors(tmp_path / "half.safetensors", half), config=TINY_CONFIG)
    assert ins.compatibility.reason == "layers.0.attention.to_q lacks its up tensor"

    fused = {"diffusion_model.layers.0.attention.qkv.lora_A.weight": np.zeros((4, 32), np.float32),
             "diffusion_model.layers.0.attention.qkv.lora_B.weight": np.zeros((96, 4), np.float32)}
    ins = inspect_file(write_safetensors(tmp_path / "fused.safetensors", fused), config=TINY_CONFIG)
    # ComfyUI-style fused q/k/v: checked as the three projections it stands for (loaders split it)
    assert ins.compatibility.verdict == "compatible", ins.compatibility.reason
    assert "1 fused attention.qkv modules are split into to_q/to_k/to_v" in ins.compatibility.reason
    fused["diffusion_model.layers.0.attention.qkv.lora_B.weight"] = np.zeros((95, 4), np.float32)
    ins = inspect_file(write_safetensors(tmp_path / "fused-bad.safetensors", fused), config=TINY_CONFIG)
    assert ins.compatibility.verdict == "incompatible" and "shape mismatch" in ins.compatibility.reason

    weird = {"model.some_weight": np.zeros((3,), np.float32)}
    ins = inspect_file(write_safetensors(tmp_path / "weird.safetensors", weird))
    assert ins.key_format == "unknown" and ins.compatibility.verdict == "unknown"
    assert ins.unrecognised_keys == ["model.some_weight"]


def test_kohya_names_map_like_diffusers() -> None:
    assert split_key("lora_unet_layers_0_attention_to_out_0.lora_down.weight") == ("layers.0.attention.to_out.0", "down")
    assert split_key("lora_unet_noise_refiner_1_adaLN_modulation_0.alpha") == ("noise_refiner.1.adaLN_modulation.0", "alpha")
    assert split_key("lora_unet_context_refiner_0_feed_forward_w2.lora_up.weight") == (
        "context_refiner.0.feed_forward.w2", "up")
    assert split_key("diffusion_model.layers.3.attention.to_k.lokr_w2_a") == ("layers.3.attention.to_k", "lokr_w2_a")
    assert split_key("transformer.layers.0.attention.to_v.lora_A.default.weight") == ("layers.0.attention.to_v", "down")
    assert split_key("transformer.layers.0.attention.norm_q.weight") is None


def test_zimage_linears_match_diffusers_model() -> None:
    """Our torch-free table of Linear shapes equals diffusers' real ZImageTransformer2DModel."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    for cfg in (TINY_CONFIG, {}):
        kwargs = {k: tuple(v) if k.startswith("all_") else v for k, v in cfg.items()}
        with torch.device("meta"):
            model = diffusers.ZImageTransformer2DModel(**kwargs)
        real = {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        assert zimage_linears(cfg) == real
        assert zimage_linears(dict(model.config)) == real  # a pipeline's own config works as is


def test_inspect_file_never_imports_torch(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "k.safetensors", lora_tensors("kohya"))
    code = (
        "import sys; from registry.inspect import inspect_file; "
        f"i = inspect_file({str(path)!r}); assert i.key_format == 'kohya'; "
        "bad = [m for m in ('torch', 'diffusers', 'open_clip', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_inspect_remote_reads_only_the_header(fake_hub: FakeHub, tmp_path: Path) -> None:
    data = write_safetensors(tmp_path / "k.safetensors", lora_tensors("kohya"), metadata={"trigger_word": "zz"}).read_bytes()
    fake_hub.add_file("owner/k-lora", "k.safetensors", data)
    ins = inspect_remote("owner/k-lora", "k.safetensors", config=TINY_CONFIG)
    assert ins.key_format == "kohya" and ins.compatibility.verdict == "compatible"
    assert ins.metadata == {"trigger_word": "zz"} and ins.sha256 is None
    assert ins.source == "owner/k-lora/k.safetensors@main"
    gets = [r for r in fake_hub.server.requests if r["method"] == "GET"]
    assert gets and all(r["headers"].get("range", r["headers"].get("Range", "")).startswith("bytes=") for r in gets)


def test_verdict_agrees_with_diffusers_loading(tmp_path: Path) -> None:
    """'compatible' files really load into diffusers' tiny Z-Image transformer; a wrong-width one does not."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    kwargs = {k: tuple(v) if k.startswith("all_") else v for k, v in TINY_CONFIG.items()}
    wide = dict(TINY_CONFIG, dim=64, n_heads=4, axes_dims=[8, 4, 4])
    cases = [(fmt, lora_tensors(fmt), True) for fmt in ("diffusers", "ai-toolkit", "kohya", "lokr")]
    cases.append(("too-wide", lora_tensors("ai-toolkit", config=wide), False))
    for name, tensors, should_load in cases:
        path = write_safetensors(tmp_path / f"{name}.safetensors", tensors)
        verdict = inspect_file(path, config=TINY_CONFIG).compatibility.verdict
        assert verdict == ("compatible" if should_load else "incompatible"), name
        torch.manual_seed(0)
        model = diffusers.ZImageTransformer2DModel(**kwargs)
        state = diffusers.ZImagePipeline.lora_state_dict(str(path))
        if should_load:
            model.load_lora_adapter(state, prefix="transformer", adapter_name="a")
            assert any("lora" in k or "lokr" in k for k, _ in model.named_parameters()), name
        else:
            with pytest.raises(Exception):
                model.load_lora_adapter(state, prefix="transformer", adapter_name="a")
