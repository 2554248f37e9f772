"""The local diffusers provider on the tiny random-weight Z-Image pipeline (CPU): LoRA
behaviour through diffusers + peft, determinism, batching, and the errors users see."""

from __future__ import annotations

import numpy as np
import pytest

from lorascope.harness.errors import InvalidRequest, ProviderError, RejectedRequest
from lorascope.harness.models import LoraSpec
from local_helpers import mean_abs_diff, pixels, with_loras


async def test_scale_zero_is_the_base_image_bit_exactly(tiny_provider, lora_dir, base_request):
    base = await tiny_provider.generate(base_request)
    zero = await tiny_provider.generate(with_loras(base_request, (lora_dir / "style.diffusers.safetensors", 0.0)))
    assert zero.images[0].data == base.images[0].data


async def test_image_moves_further_from_base_as_scale_grows(tiny_provider, lora_dir, base_request):
    base = await tiny_provider.generate(base_request)
    diffs = []
    for scale in (0.25, 0.5, 1.0):
        result = await tiny_provider.generate(with_loras(base_request, (lora_dir / "style.diffusers.safetensors", scale)))
        diffs.append(mean_abs_diff(result, base))
    assert 0 < diffs[0] < diffs[1] < diffs[2], diffs


async def test_no_lora_request_after_lora_requests_gives_the_base(tiny_provider, lora_dir, base_request):
    base = await tiny_provider.generate(base_request)
    await tiny_provider.generate(with_loras(base_request, (lora_dir / "other.safetensors", 1.0)))
    again = await tiny_provider.generate(base_request)
    assert again.images[0].data == base.images[0].data


async def test_two_loras_combine(tiny_provider, lora_dir, base_request):
    style, other = lora_dir / "style.diffusers.safetensors", lora_dir / "other.safetensors"
    base = await tiny_provider.generate(base_request)
    only_style = await tiny_provider.generate(with_loras(base_request, (style, 0.8)))
    only_other = await tiny_provider.generate(with_loras(base_request, (other, 0.8)))
    both = await tiny_provider.generate(with_loras(base_request, (style, 0.8), (other, 0.8)))
    for single in (base, only_style, only_other):
        assert mean_abs_diff(both, single) > 0.5
    assert set(both.metadata["adapters"]) == set(only_style.metadata["adapters"] + only_other.metadata["adapters"])


async def test_three_key_formats_give_identical_images(tiny_provider, lora_dir, base_request):
    images = {}
    for fmt in ("diffusers", "ai-toolkit", "kohya"):
        result = await tiny_provider.generate(with_loras(base_request, (lora_dir / f"style.{fmt}.safetensors", 0.7)))
        images[fmt] = result.images[0].data
    base = await tiny_provider.generate(base_request)
    assert images["diffusers"] == images["ai-toolkit"] == images["kohya"]
    assert images["diffusers"] != base.images[0].data


async def test_removal_restores_the_base_exactly(lora_dir, base_request):
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random"})
    base = await provider.generate(base_request)
    style, other = lora_dir / "style.diffusers.safetensors", lora_dir / "other.safetensors"
    await provider.generate(with_loras(base_request, (style, 1.0), (other, 0.5)))
    assert len(provider.loaded_adapters) == 2

    provider.remove_loras([style])
    assert list(provider.loaded_adapters.values()) == [str(other)]
    provider.remove_loras()
    assert provider.loaded_adapters == {}
    # No adapter layers are left in the transformer: the weights are the base weights.
    modules = [n for n, _ in provider.load_pipeline().transformer.named_modules() if "lora_" in n]
    assert modules == []
    after = await provider.generate(base_request)
    assert after.images[0].data == base.images[0].data


async def test_scale_sweep_never_reloads(lora_dir, base_request, monkeypatch):
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random"})
    pipe = provider.load_pipeline()
    calls = []
    real_load = pipe.load_lora_weights
    monkeypatch.setattr(pipe, "load_lora_weights", lambda *a, **k: (calls.append(a[0]), real_load(*a, **k))[1])
    fused = []
    monkeypatch.setattr(pipe, "fuse_lora", lambda *a, **k: fused.append(a))

    style = lora_dir / "style.kohya.safetensors"
    for scale in (0.0, 0.25, 0.5, 1.0, 2.0, 0.5):
        await provider.generate(with_loras(base_request, (style, scale)))
    await provider.generate(base_request)
    await provider.generate(with_loras(base_request, (style, 1.5)))
    assert calls == [str(style)]
    assert provider.lora_loads == 1
    assert fused == []


async def test_adapter_cache_evicts_least_recently_used_never_the_requests_own(lora_dir, base_request, tiny_provider):
    """max_adapters bounds the adapters kept loaded; an evicted file reloads to the same
    image; a request's own loaded adapters are not evicted to make room for its new one."""
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random", "max_adapters": 3})
    f0, f1, f2 = (lora_dir / f"style.{fmt}.safetensors" for fmt in ("diffusers", "ai-toolkit", "kohya"))
    f3 = lora_dir / "other.safetensors"
    first = await provider.generate(with_loras(base_request, (f0, 0.8)))
    await provider.generate(with_loras(base_request, (f1, 0.8)))
    await provider.generate(with_loras(base_request, (f2, 0.8)))
    assert provider.lora_loads == 3
    # f0 is the oldest, but this request needs it: f1 makes room for f3 instead
    await provider.generate(with_loras(base_request, (f3, 0.5), (f0, 0.5)))
    assert provider.lora_loads == 4
    assert sorted(provider.loaded_adapters.values()) == sorted(map(str, (f0, f2, f3)))
    again = await provider.generate(with_loras(base_request, (f1, 0.8)))  # evicted: loaded again
    assert provider.lora_loads == 5 and len(provider.loaded_adapters) == 3
    assert again.images[0].data == first.images[0].data  # the same weights in another key format
    base = await tiny_provider.generate(base_request)
    assert (await provider.generate(base_request)).images[0].data == base.images[0].data


async def test_same_seed_same_pixels_different_seed_different_pixels(tiny_provider, base_request):
    from lorascope.harness.providers.local import DiffusersProvider

    first = await tiny_provider.generate(base_request)
    second = await tiny_provider.generate(base_request)
    fresh = await DiffusersProvider({"model": "tiny-random"}).generate(base_request)
    other_seed = await tiny_provider.generate(base_request.model_copy(update={"seed": 8}))
    assert first.images[0].data == second.images[0].data == fresh.images[0].data
    assert mean_abs_diff(first, other_seed) > 1.0


async def test_batch_of_seeds_equals_single_requests(tiny_provider, lora_dir, base_request):
    request = with_loras(base_request, (lora_dir / "style.diffusers.safetensors", 0.6))
    requests = [request.model_copy(update={"seed": seed}) for seed in (11, 12, 13)]
    batch = await tiny_provider.generate_batch(requests)
    singles = [await tiny_provider.generate(r) for r in requests]
    assert [r.seed for r in batch] == [11, 12, 13]
    # Not bit-exact on CPU: the batched matmuls round differently (latents differ by ~1e-6),
    # which moves at most a few pixels by one 8-bit level. docs/local.md says so.
    for together, alone in zip(batch, singles):
        delta = np.abs(pixels(together) - pixels(alone))
        assert delta.max() <= 1
        assert (delta > 0).mean() < 0.001
    assert batch[0].metadata["batch_size"] == 3
    assert len({r.images[0].data for r in batch}) == 3


async def test_batch_refuses_requests_that_differ_beyond_the_seed(tiny_provider, base_request):
    with pytest.raises(InvalidRequest, match="differ only by seed"):
        await tiny_provider.generate_batch([base_request, base_request.model_copy(update={"prompt": "x"})])


async def test_foreign_lora_fails_with_one_line_naming_the_file(tiny_provider, lora_dir, base_request):
    foreign = lora_dir / "sdxl_style.safetensors"
    with pytest.raises(RejectedRequest) as caught:
        await tiny_provider.generate(with_loras(base_request, (foreign, 1.0)))
    message = str(caught.value)
    assert "\n" not in message
    assert str(foreign) in message
    assert "Z-Image" in message


async def test_loader_errors_are_translated_when_no_header_check_runs(lora_dir, base_request, monkeypatch, tmp_path):
    """Without the registry's header check the diffusers/peft exception itself is turned
    into one line naming the file and the reason; the base model is left untouched."""
    from diffusers import ZImageTransformer2DModel

    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.providers.local import DiffusersProvider
    from lorascope.harness.providers.tiny_zimage import TRANSFORMER_CONFIG

    provider = DiffusersProvider({"model": "tiny-random"})
    monkeypatch.setattr(provider, "_header_incompatibility", lambda path: None)
    base = await provider.generate(base_request)

    foreign = lora_dir / "sdxl_style.safetensors"
    with pytest.raises(RejectedRequest) as caught:
        await provider.generate(with_loras(base_request, (foreign, 1.0)))
    message = str(caught.value)
    assert "\n" not in message and str(foreign) in message
    assert "another model family" in message

    wider = ZImageTransformer2DModel(**{**TRANSFORMER_CONFIG, "dim": 64, "axes_dims": [16, 8, 8]})
    mismatched = write_lora(tmp_path / "wider.safetensors", wider)
    with pytest.raises(RejectedRequest) as caught:
        await provider.generate(with_loras(base_request, (mismatched, 1.0)))
    message = str(caught.value)
    assert "\n" not in message and str(mismatched) in message
    assert "shapes do not match" in message and "[4, 64]" in message

    assert provider.loaded_adapters == {}
    after = await provider.generate(base_request)
    assert after.images[0].data == base.images[0].data


def test_validate_reports_every_problem_at_once(tiny_provider, lora_dir, base_request, tmp_path):
    pickle_file = tmp_path / "model.ckpt"
    pickle_file.write_bytes(b"not really")
    not_weights = tmp_path / "notes.safetensors"
    not_weights.write_text("hello")
    request = base_request.model_copy(
        update={
            "width": 66,
            "options": {"acceleration": "high"},
            "loras": (
                LoraSpec(path=str(pickle_file), scale=1.0),
                LoraSpec(path=str(tmp_path / "missing.safetensors"), scale=4.5),
                LoraSpec(path=str(not_weights), scale=1.0),
            ),
        }
    )
    problems = tiny_provider.validate(request)
    text = "\n".join(problems)
    assert "width 66" in text and "multiple of 4" in text
    assert "acceleration" in text
    assert f"{pickle_file}: pickle" in text
    assert "missing.safetensors: file does not exist" in text
    assert "scale 4.5 is outside [0, 4]" in text
    assert f"{not_weights}: not a safetensors file" in text
    assert len(problems) == 6


def test_validate_asks_for_local_files_and_refuses_negative_scales(tiny_provider, lora_dir, base_request):
    request = base_request.model_copy(
        update={
            "loras": (
                LoraSpec(id="classic-painting", repo="renderartist/x", file="x.safetensors", scale=0.7),
                LoraSpec(path=str(lora_dir / "other.safetensors"), scale=-0.5),
            )
        }
    )
    problems = tiny_provider.validate(request)
    assert any("classic-painting" in p and "local file" in p for p in problems)
    assert any("scale -0.5" in p for p in problems)
    assert tiny_provider.validate(base_request) == []


async def test_invalid_request_raises_before_the_pipeline_runs(tiny_provider, base_request):
    with pytest.raises(InvalidRequest, match="width 30"):
        await tiny_provider.generate(base_request.model_copy(update={"width": 30}))


async def test_result_records_software_timings_and_cost(lora_dir, base_request):
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random"})
    first = await provider.generate(base_request)
    second = await provider.generate(with_loras(base_request, (lora_dir / "other.safetensors", 1.0)))
    third = await provider.generate(with_loras(base_request, (lora_dir / "other.safetensors", 0.5)))
    software = first.software
    assert software["model"] == "tiny-random" and software["revision"] == "tiny-random-v1"
    assert software["device"] == "cpu" and software["dtype"] == "float32"
    assert {"diffusers", "torch", "peft", "transformers"} <= set(software)
    assert first.timings.load_s > 0 and first.timings.inference_s > 0
    assert second.timings.load_s > 0  # a LoRA file was read
    assert third.timings.load_s == 0.0  # a scale change reads nothing
    assert first.cost.source == "free" and first.cost.usd == 0.0
    assert first.images[0].width == 64 and first.images[0].format == "png"
    assert pixels(first).shape == (64, 64, 3)
    assert provider.model_version() == "tiny-random@tiny-random-v1;float32"
    unloaded = DiffusersProvider({"model": "tiny-random"})
    assert unloaded.model_version() == provider.model_version()  # fingerprints never move
    assert DiffusersProvider({"revision": "abc123", "dtype": "bfloat16"}).model_version() == (
        "Tongyi-MAI/Z-Image-Turbo@abc123;bfloat16"
    )


def test_settings_that_change_the_pixels_change_the_model_version():
    """guidance_scale and max_sequence_length are provider config in a suite (not request
    options), so the model version (part of every fingerprint) must name them, or a shared
    cache would hand back images made with other settings."""
    from lorascope.harness.providers.local import DiffusersProvider

    default = DiffusersProvider({"model": "tiny-random"}).model_version()
    assert default == "tiny-random@tiny-random-v1;float32"
    guided = DiffusersProvider({"model": "tiny-random", "guidance_scale": 1.5}).model_version()
    shorter = DiffusersProvider({"model": "tiny-random", "max_sequence_length": 128}).model_version()
    assert len({default, guided, shorter}) == 3
    assert guided.endswith(";guidance=1.5") and shorter.endswith(";max_seq=128")


def test_device_auto_prefers_cuda_then_mps_then_cpu_with_bf16_and_batching_on_gpu(monkeypatch):
    """Without a GPU here, the choice itself is checked: what `device: auto` picks given
    what torch reports, and the dtype and batching defaults that follow from it."""
    import torch

    from lorascope.harness.providers.local import DiffusersProvider

    def pick(cuda: bool, mps: bool) -> DiffusersProvider:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        return DiffusersProvider({"model": "tiny-random"})

    on_cuda = pick(True, True)
    assert on_cuda._resolve_device() == "cuda" and on_cuda.batch_seeds is True
    assert on_cuda.model_version().endswith(";bfloat16")
    on_mps = pick(False, True)
    assert on_mps._resolve_device() == "mps" and on_mps.batch_seeds is False
    assert on_mps.model_version().endswith(";bfloat16")
    on_cpu = pick(False, False)
    assert on_cpu._resolve_device() == "cpu" and on_cpu.model_version().endswith(";float32")
    forced = DiffusersProvider({"model": "tiny-random", "device": "cpu", "dtype": "bfloat16", "batch_seeds": True})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert forced._resolve_device() == "cpu" and forced.model_version().endswith(";bfloat16") and forced.batch_seeds


async def test_turbo_settings_are_passed_8_transformer_passes_without_cfg(tiny_provider, base_request):
    """ZImagePipeline's own defaults are 50 steps with guidance 5 (CFG doubles each pass);
    Turbo is 8 passes without guidance. Counted at the transformer."""
    transformer = tiny_provider.load_pipeline().transformer
    batches: list[int] = []
    handle = transformer.register_forward_hook(lambda module, args, out: batches.append(len(args[0])))
    try:
        await tiny_provider.generate(base_request.model_copy(update={"steps": 8}))
    finally:
        handle.remove()
    assert batches == [1] * 8  # 8 passes, one latent each (CFG would send 2)


def test_a_model_folder_is_identified_by_what_it_holds(tmp_path):
    """The model version (in every fingerprint) of a local folder changes when its weights
    change, so a shared cache never answers for the old ones; a hub snapshot folder is
    named by its commit."""
    from lorascope.harness.providers.local import DiffusersProvider

    folder = tmp_path / "model"
    (folder / "transformer").mkdir(parents=True)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"old weights")
    provider = DiffusersProvider({"model": str(folder)})
    before = provider.model_version()
    assert before == provider.model_version()
    weights.write_bytes(b"new weights, retrained")
    assert provider.model_version() != before

    snapshot = tmp_path / "hub" / "models--o--m" / "snapshots" / "0123abcd" / "transformer"
    snapshot.mkdir(parents=True)
    assert DiffusersProvider({"model": str(snapshot.parent)}).model_version().startswith(f"{snapshot.parent}@0123abcd;")


async def test_unseeded_request_draws_and_records_a_seed(tiny_provider, base_request):
    result = await tiny_provider.generate(base_request.model_copy(update={"seed": None}))
    assert result.metadata["seed_drawn"] is True
    again = await tiny_provider.generate(base_request.model_copy(update={"seed": result.seed}))
    assert again.images[0].data == result.images[0].data


async def test_jpeg_and_webp_outputs(tiny_provider, base_request):
    from PIL import Image
    import io

    for fmt, pil_name in (("jpeg", "JPEG"), ("webp", "WEBP")):
        result = await tiny_provider.generate(base_request.model_copy(update={"output_format": fmt}))
        assert Image.open(io.BytesIO(result.images[0].data)).format == pil_name


async def test_hotswap_slots_switch_loras_without_new_adapter_names(lora_dir, base_request, tiny_provider):
    """Hotswap mode (what `compile` uses) on CPU without compiling: files replace the weights
    of fixed slots; images match the plain provider's; no LoRA means all slots at 0."""
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random", "hotswap": True, "hotswap_target_rank": 8})
    style, other = lora_dir / "style.diffusers.safetensors", lora_dir / "other.safetensors"
    base = await provider.generate(base_request)
    plain_style = await tiny_provider.generate(with_loras(base_request, (style, 0.8)))
    plain_other = await tiny_provider.generate(with_loras(base_request, (other, 0.8)))

    swapped_style = await provider.generate(with_loras(base_request, (style, 0.8)))
    swapped_other = await provider.generate(with_loras(base_request, (other, 0.8)))
    assert set(provider.loaded_adapters) == {"slot0"}
    assert provider.lora_loads == 2
    assert mean_abs_diff(swapped_style, plain_style) < 0.05
    assert mean_abs_diff(swapped_other, plain_other) < 0.05
    # A scale change writes into the same scaling tensors (a compiled graph keeps them as
    # inputs; a Python float there would be baked in and force a recompile).
    from peft.tuners.lora.layer import LoraLayer

    layers = [m for m in provider.load_pipeline().transformer.modules() if isinstance(m, LoraLayer)]
    before = [m.scaling["slot0"] for m in layers]
    low = await provider.generate(with_loras(base_request, (other, 0.3)))
    assert provider.lora_loads == 2  # a scale change in a slot reloads nothing
    assert all(m.scaling["slot0"] is t for m, t in zip(layers, before))
    plain_low = await tiny_provider.generate(with_loras(base_request, (other, 0.3)))
    assert mean_abs_diff(low, plain_low) < 0.05 and mean_abs_diff(low, swapped_other) > 0.5
    no_lora = await provider.generate(base_request)
    assert no_lora.images[0].data == base.images[0].data


async def test_a_local_folder_in_the_diffusers_layout_loads_and_matches(tmp_path, tiny_provider, lora_dir, base_request):
    """`model: <folder>` (what `save_pretrained` writes, or a downloaded snapshot): the same
    weights give the same pixels as the in-code tiny model, LoRAs fit it, and the result
    names the folder."""
    from lorascope.harness.providers.local import DiffusersProvider
    from lorascope.harness.providers.tiny_zimage import build_tiny_pipeline

    folder = tmp_path / "tiny-folder"
    build_tiny_pipeline().save_pretrained(folder)
    provider = DiffusersProvider({"model": str(folder)})
    assert provider.validate(base_request) == []  # size multiple read from the folder's VAE config
    assert any("multiple of 4" in p for p in provider.validate(base_request.model_copy(update={"width": 66})))
    styled = with_loras(base_request, (lora_dir / "style.diffusers.safetensors", 0.7))
    from_folder = await provider.generate(styled)
    in_code = await tiny_provider.generate(styled)
    assert from_folder.images[0].data == in_code.images[0].data
    assert from_folder.software["revision"] == f"local:{folder.resolve()}"
    assert provider.model_version().startswith(f"{folder}@")


async def test_missing_model_gives_a_clear_error(monkeypatch, tmp_path, base_request):
    from lorascope.harness.providers.local import DiffusersProvider

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    request = base_request.model_copy(update={"width": 1024, "height": 1024})
    with pytest.raises(ProviderError) as caught:
        await DiffusersProvider({"model": "Tongyi-MAI/Z-Image-Turbo"}).generate(request)
    message = str(caught.value)
    assert "cannot load Tongyi-MAI/Z-Image-Turbo@main" in message
    assert "hf download Tongyi-MAI/Z-Image-Turbo" in message and "local folder" in message
    assert "\n" not in message

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ProviderError, match="diffusers layout"):
        await DiffusersProvider({"model": str(empty)}).generate(request)
    with pytest.raises(ProviderError, match="neither an existing local folder"):
        await DiffusersProvider({"model": str(tmp_path / "nope" / "deeper")}).generate(request)


async def test_num_images_uses_consecutive_seeds(tiny_provider, base_request):
    pair = await tiny_provider.generate(base_request.model_copy(update={"num_images": 2}))
    second_alone = await tiny_provider.generate(base_request.model_copy(update={"seed": base_request.seed + 1}))
    assert len(pair.images) == 2 and pair.metadata["image_seeds"] == [7, 8]
    from PIL import Image
    import io

    together = np.asarray(Image.open(io.BytesIO(pair.images[1].data))).astype(np.int16)
    assert np.abs(together - pixels(second_alone)).max() <= 1


async def test_hotswap_mode_removal_restores_base_and_slots_work_again(lora_dir, base_request):
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random", "hotswap": True, "hotswap_target_rank": 8})
    style, other = lora_dir / "style.diffusers.safetensors", lora_dir / "other.safetensors"
    base = await provider.generate(base_request)
    await provider.generate(with_loras(base_request, (style, 1.0), (other, 1.0)))
    provider.remove_loras()
    assert (await provider.generate(base_request)).images[0].data == base.images[0].data
    first = await provider.generate(with_loras(base_request, (style, 0.8)))
    await provider.generate(with_loras(base_request, (other, 0.8)))
    back = await provider.generate(with_loras(base_request, (style, 0.8)))
    assert back.images[0].data == first.images[0].data
