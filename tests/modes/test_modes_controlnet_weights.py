"""ControlNet weights loaded the way users have them, through the local provider's real code:
alibaba-pai's single-file release layout with its config from the `controlnet_config` setting
or from the hub cache offline, and a diffusers folder (save_pretrained), each giving images
byte-identical to the in-code tiny ControlNet; files that are not a Z-Image ControlNet, pickle
files, a missing config offline and a config of another release each fail in one line saying
what to do; a changed file is a new fingerprint."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

pytest.importorskip("diffusers")

from lorascope.harness.errors import ProviderError  # noqa: E402
from lorascope.harness.fingerprint import fingerprint  # noqa: E402
from lorascope.harness.models import GenerationRequest, InputImage  # noqa: E402
from lorascope.harness.providers.local import DiffusersProvider  # noqa: E402
from lorascope.harness.providers.tiny_controlnet import write_config, write_single_file  # noqa: E402
from tests.fakes.images import make_image  # noqa: E402

CONTROL = InputImage(data=make_image("png", 64, 64, seed=11), mime="image/png", source="edges.png")
#: The config repo diffusers' from_single_file infers for this key layout (v1 release).
CONFIG_REPO = "hlky/Z-Image-Turbo-Fun-Controlnet-Union"


def request(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a lighthouse on a cliff", "width": 64, "height": 64, "seed": 5, "steps": 2,
                                "control_image": CONTROL, "control_scale": 0.8, **kw})


async def generate(settings: dict, req: GenerationRequest | None = None) -> bytes:
    provider = DiffusersProvider({"model": "tiny-random", **settings})
    try:
        return (await provider.generate(req or request())).images[0].data
    finally:
        await provider.aclose()


@pytest.fixture(scope="module")
def reference() -> bytes:
    """The in-code tiny ControlNet's image (settings `controlnet: tiny-random`)."""
    import asyncio

    return asyncio.run(generate({"controlnet": "tiny-random"}))


@pytest.fixture
def single_file(tmp_path):
    return write_single_file(tmp_path / "Z-Image-Turbo-Fun-Controlnet-Union.safetensors")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty hub cache with HF_HUB_OFFLINE on (what the variable sets at import)."""
    import huggingface_hub.constants as hub

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    return cache


def test_the_single_file_is_in_the_release_layout_without_a_config(single_file):
    from safetensors import safe_open

    with safe_open(str(single_file), framework="numpy") as fh:
        keys = set(fh.keys())
    assert "control_all_x_embedder.2-1.weight" in keys  # diffusers' marker of the release
    assert {k.split(".")[0] for k in keys} == {"control_all_x_embedder", "control_layers", "control_noise_refiner"}
    assert list(single_file.parent.iterdir()) == [single_file]


async def test_single_file_with_controlnet_config_folder_matches_the_in_code_model(single_file, tmp_path, reference,
                                                                                    offline_hub):
    folder = write_config(tmp_path / "union-config")
    image = await generate({"controlnet": str(single_file), "controlnet_config": str(folder)})
    assert image == reference
    assert Image.open(io.BytesIO(image)).size == (64, 64)


async def test_single_file_finds_its_config_in_the_hub_cache_offline(single_file, tmp_path, reference, offline_hub):
    """The layout `hf download hlky/Z-Image-Turbo-Fun-Controlnet-Union config.json` leaves, read
    with the hub unreachable: the repo is the one diffusers infers from the file's keys."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub / f"models--{CONFIG_REPO.replace('/', '--')}"
    write_config(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert await generate({"controlnet": str(single_file)}) == reference


async def test_a_save_pretrained_folder_matches_the_in_code_model(tmp_path, reference, offline_hub):
    from lorascope.harness.providers.tiny_controlnet import build_tiny_controlnet

    folder = tmp_path / "controlnet"
    build_tiny_controlnet().save_pretrained(str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert await generate({"controlnet": str(folder)}) == reference


async def load_error(settings: dict) -> str:
    with pytest.raises(ProviderError) as caught:
        await generate(settings)
    message = caught.value.message
    assert "\n" not in message and "Traceback" not in message
    return message


async def test_a_missing_config_offline_says_which_repo_and_what_to_do(single_file, offline_hub):
    message = await load_error({"controlnet": str(single_file)})
    assert "without its config" in message and CONFIG_REPO in message
    assert f"hf download {CONFIG_REPO} config.json" in message and "controlnet_config" in message


def test_a_missing_file_is_named_with_the_settings(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        DiffusersProvider({"model": "tiny-random", "controlnet": str(tmp_path / "gone.safetensors")})
    assert "gone.safetensors: file does not exist" in str(caught.value)


async def test_a_file_that_is_not_a_zimage_controlnet_is_refused_before_loading(tmp_path, offline_hub):
    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.providers.tiny_zimage import build_tiny_pipeline

    lora = write_lora(tmp_path / "style.safetensors", build_tiny_pipeline().transformer, seed=1)
    message = await load_error({"controlnet": str(lora), "controlnet_config": str(write_config(tmp_path / "cfg"))})
    assert "is not a Z-Image ControlNet" in message and "a LoRA" in message
    (tmp_path / "text.safetensors").write_text("not weights")
    message = await load_error({"controlnet": str(tmp_path / "text.safetensors")})
    assert "text.safetensors is not a readable .safetensors file" in message


async def test_a_config_of_another_release_is_named_not_half_loaded(single_file, tmp_path, offline_hub):
    import json

    folder = write_config(tmp_path / "cfg")
    config = json.loads((folder / "config.json").read_text())
    config["control_layers_places"] = [0, 1]  # a release with more control blocks
    (folder / "config.json").write_text(json.dumps(config))
    message = await load_error({"controlnet": str(single_file), "controlnet_config": str(folder)})
    assert "does not fit the config" in message and "missing (e.g. control_layers.1." in message
    wrong = await load_error({"controlnet": str(single_file), "controlnet_config": str(tmp_path / "nowhere")})
    assert "controlnet_config" in wrong and "nowhere" in wrong


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".ckpt"])
def test_pickle_files_are_refused_with_the_settings(tmp_path, suffix):
    from pydantic import ValidationError

    path = tmp_path / f"Z-Image-Turbo-Fun-Controlnet-Union{suffix}"
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle: never opened
    with pytest.raises(ValidationError) as caught:
        DiffusersProvider({"model": "tiny-random", "controlnet": str(path)})
    assert "pickle weight files execute code" in str(caught.value) and "only .safetensors" in str(caught.value)


def test_generate_refuses_a_pickle_controlnet_before_anything_runs(tmp_path):
    from typer.testing import CliRunner

    from lorascope.cli import app

    (tmp_path / "edges.png").write_bytes(CONTROL.data)
    result = CliRunner().invoke(app, ["generate", "--provider", "diffusers", "--model", "tiny-random", "--config",
                                      f"controlnet={tmp_path / 'cn.pt'}", "--seed", "1", "--size", "64x64", "--control",
                                      str(tmp_path / "edges.png"), "x", "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 1 and "--config controlnet" in result.output and "pickle" in result.output
    assert not (tmp_path / "o.png").exists()


def test_a_changed_file_is_a_new_fingerprint(single_file, tmp_path):
    """The file's content hash is in the endpoint: new bytes under the same name, size and
    mtime are another ControlNet; the same bytes elsewhere are the same one."""
    import shutil

    def fp(path, config=None) -> str:
        provider = DiffusersProvider({"model": "tiny-random", "controlnet": str(path), "controlnet_config": config})
        req = request()
        return fingerprint(provider.name, provider.endpoint(req), provider.model_version(), req)

    before = fp(single_file)
    stat = single_file.stat()
    copy = tmp_path / "moved" / single_file.name
    copy.parent.mkdir()
    shutil.copy2(single_file, copy)
    assert fp(copy) == before  # same bytes, another folder: nothing to regenerate

    from safetensors.torch import load_file, save_file

    weights = load_file(str(single_file))
    weights["control_layers.0.after_proj.weight"] = weights["control_layers.0.after_proj.weight"] + 1
    save_file(weights, str(single_file))
    os.utime(single_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # a copy that kept the timestamp
    assert single_file.stat().st_size == stat.st_size
    assert fp(single_file) != before
    folder = write_config(tmp_path / "cfg")
    assert fp(single_file, str(folder)) != fp(single_file)  # the config shapes the model too


def v1_release_layout() -> dict[str, list[int]]:
    """The v1 release's tensors and shapes as published for Z-Image-Turbo-Fun-Controlnet-Union
    (136 tensors, ~1.55 B params: control on blocks 0,5,...,25, two noise-refiner blocks)."""
    h = 3840
    block = {"adaLN_modulation.0.weight": [4 * h, 256], "adaLN_modulation.0.bias": [4 * h],
             "attention.norm_q.weight": [128], "attention.norm_k.weight": [128],
             **{f"attention.{p}.weight": [h, h] for p in ("to_q", "to_k", "to_v", "to_out.0")},
             "attention_norm1.weight": [h], "attention_norm2.weight": [h], "ffn_norm1.weight": [h],
             "ffn_norm2.weight": [h], "feed_forward.w1.weight": [10240, h], "feed_forward.w2.weight": [h, 10240],
             "feed_forward.w3.weight": [10240, h]}
    layout = {"control_all_x_embedder.2-1.weight": [h, 64], "control_all_x_embedder.2-1.bias": [h],
              "control_layers.0.before_proj.weight": [h, h], "control_layers.0.before_proj.bias": [h]}
    for i in range(6):
        layout |= {f"control_layers.{i}.{k}": s for k, s in block.items()}
        layout |= {f"control_layers.{i}.after_proj.weight": [h, h], f"control_layers.{i}.after_proj.bias": [h]}
    for i in range(2):
        layout |= {f"control_noise_refiner.{i}.{k}": s for k, s in block.items()}
    return layout


def test_the_fit_check_accepts_the_real_v1_layout_and_names_a_2_1_config():
    """Not over-strict on the file users have: the published v1 layout fits a v1 config
    (checked on meta tensors, no weights), diffusers infers the hlky v1 repo from its keys,
    and a 2.1-style config (noise refiner with projections) is named as the wrong release."""
    from pathlib import Path

    from diffusers.loaders.single_file_utils import fetch_diffusers_config

    from lorascope.harness.providers.controlnet_weights import ControlNetWeightsError, check_fits

    layout = v1_release_layout()
    assert len(layout) == 136
    assert fetch_diffusers_config(dict.fromkeys(layout))["pretrained_model_name_or_path"] == CONFIG_REPO
    v1 = {"control_layers_places": [0, 5, 10, 15, 20, 25], "control_refiner_layers_places": [0, 1],
          "control_in_dim": 16, "add_control_noise_refiner": None}
    check_fits(Path("Z-Image-Turbo-Fun-Controlnet-Union.safetensors"), layout, v1, CONFIG_REPO)
    with pytest.raises(ControlNetWeightsError, match="missing .*control_noise_refiner.0.after_proj"):
        check_fits(Path("Z-Image-Turbo-Fun-Controlnet-Union.safetensors"), layout,
                   v1 | {"add_control_noise_refiner": "control_noise_refiner"}, "2.1-style")


def test_relative_weight_paths_are_read_from_the_suites_folder(tmp_path, monkeypatch):
    """`controlnet: weights/cn.safetensors` in a suite means the file beside the suite, from
    whatever folder `lorascope run` starts in; a hub repo id (nothing of that name beside the
    suite) is left as written."""
    from lorascope.harness.grid import setup_providers
    from lorascope.harness.suite import load_suite

    project = tmp_path / "proj"
    (project / "weights" / "cfg").mkdir(parents=True)
    write_single_file(project / "weights" / "cn.safetensors")
    write_config(project / "weights" / "cfg")
    (project / "loras.yaml").write_text("version: 1\nloras: []\n")
    (project / "suite.yaml").write_text(
        "name: cn\nmode: controlnet\nproviders:\n  - diffusers: {model: tiny-random, controlnet: weights/cn.safetensors,"
        " controlnet_config: weights/cfg}\nloras: []\nimages: [{id: e, image: edges.png}]\nprompts: [a cliff]\n"
        "seeds: [1]\nsize: 64x64\n")
    (project / "edges.png").write_bytes(make_image("png", 64, 64, seed=2))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    setups, problems = setup_providers(load_suite(project / "suite.yaml"))
    assert problems == []
    config = setups["diffusers"].config
    assert config.controlnet == str((project / "weights" / "cn.safetensors").resolve())
    assert config.controlnet_config == str((project / "weights" / "cfg").resolve())
    (project / "suite.yaml").write_text((project / "suite.yaml").read_text().replace(
        "controlnet_config: weights/cfg", f"controlnet_config: {CONFIG_REPO}"))
    setups, problems = setup_providers(load_suite(project / "suite.yaml"))
    assert problems == [] and setups["diffusers"].config.controlnet_config == CONFIG_REPO
