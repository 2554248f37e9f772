"""`lorascope generate --image/--mask/--strength` and `--control`: what goes over the wire to
fal's loopback fake (the image-to-image, inpaint and controlnet endpoints, the input as a data
URI), every input problem listed at once before anything is sent, refusal by providers that
do not serve a mode, and the same options on the tiny local pipeline."""

from __future__ import annotations

import base64

import pytest
from typer.testing import CliRunner

from lorascope.cli import app
from tests.fakes import TEST_KEY as KEY
from tests.fakes.images import make_image

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["generate", *args], catch_exceptions=False)


def test_image_and_strength_go_to_fals_image_to_image_endpoint_as_a_data_uri(fal, tmp_path):
    photo = make_image("jpeg", 96, 64, seed=2)
    (tmp_path / "photo.jpg").write_bytes(photo)
    out = tmp_path / "out.png"
    result = invoke("--provider", "fal", "--seed", "7", "--size", "512x512", "--image", str(tmp_path / "photo.jpg"),
                    "--strength", "0.35", "a harbour, oil painting", "-o", str(out))
    assert result.exit_code == 0, result.output
    (submit,) = fal.hits("submit")
    assert submit.path == "/fal-ai/z-image/turbo/image-to-image"
    body = dict(submit.json)
    uri = body.pop("image_url")
    assert uri.startswith("data:image/jpeg;base64,") and base64.b64decode(uri.split(",", 1)[1]) == photo
    assert body["strength"] == 0.35 and body["prompt"] == "a harbour, oil painting" and body["seed"] == 7
    assert "mask_image_url" not in body and "loras" not in body
    assert out.exists() and "wrote" in result.output and KEY not in result.output


def test_mask_makes_it_inpaint(fal, tmp_path):
    (tmp_path / "in.png").write_bytes(make_image("png", 64, 64, seed=1))
    mask = make_image("png", 64, 64, seed=5)
    (tmp_path / "mask.png").write_bytes(mask)
    result = invoke("--provider", "fal", "--seed", "1", "--size", "512x512", "--image", str(tmp_path / "in.png"),
                    "--mask", str(tmp_path / "mask.png"), "a cat", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 0, result.output
    (submit,) = fal.hits("submit")
    assert submit.path == "/fal-ai/z-image/turbo/inpaint"
    assert base64.b64decode(submit.json["mask_image_url"].removeprefix("data:image/png;base64,")) == mask
    assert "strength" not in submit.json  # not given: fal's default applies


def test_every_input_problem_at_once_and_nothing_sent(fal, tmp_path):
    (tmp_path / "in.png").write_bytes(make_image("png", 64, 64))
    (tmp_path / "mask.png").write_bytes(make_image("png", 32, 32))
    (tmp_path / "notes.png").write_text("not a picture")
    out_dir = tmp_path / "folder"
    out_dir.mkdir()
    result = invoke("--provider", "fal", "--seed", "1", "--steps", "12", "--image", str(tmp_path / "in.png"),
                    "--mask", str(tmp_path / "mask.png"), "--strength", "1.5", "x", "-o", str(out_dir))
    assert result.exit_code == 1
    for needle in ("--mask: 32x32 differs from --image's 64x64", "--strength: 1.5 is not between 0 and 1",
                   "steps 12", "is a folder"):
        assert needle in result.output, (needle, result.output)
    bad = invoke("--provider", "fal", "--seed", "1", "--image", str(tmp_path / "notes.png"), "x",
                 "-o", str(tmp_path / "o.png"))
    missing = invoke("--provider", "fal", "--seed", "1", "--mask", str(tmp_path / "mask.png"), "--strength", "0.5",
                     "x", "-o", str(tmp_path / "o.png"))
    assert bad.exit_code == 1 and "notes.png is not a readable image" in bad.output
    assert missing.exit_code == 1 and "--mask: needs --image" in missing.output and "--strength: needs --image" in missing.output
    assert fal.requests == []


def test_a_text_only_provider_refuses_image_mode_before_sending(fake_factory, monkeypatch, tmp_path):
    fake = fake_factory("novita")
    monkeypatch.setenv("NOVITA_API_KEY", KEY)
    monkeypatch.setenv("LORASCOPE_NOVITA_URL", fake.url)
    (tmp_path / "in.png").write_bytes(make_image("png", 64, 64))
    result = invoke("--provider", "novita", "--seed", "1", "--image", str(tmp_path / "in.png"), "--strength", "0.5",
                    "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1 and "mode img2img is not served by novita" in result.output
    assert fake.requests == []


def test_tiny_diffusers_img2img_from_the_command_line(tmp_path, monkeypatch):
    """Same as the provider's own img2img: strength 0 is the input through the VAE whatever the
    prompt and seed; a higher strength changes the picture; the same call gives the same bytes."""
    pytest.importorskip("diffusers")
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "in.png").write_bytes(make_image("png", 64, 64, seed=4))

    def gen(name: str, strength: str, seed: str = "1", prompt: str = "a red cube") -> bytes:
        out = tmp_path / name
        result = invoke("--provider", "diffusers", "--model", "tiny-random", "--size", "64x64", "--steps", "2",
                        "--seed", seed, "--image", str(tmp_path / "in.png"), "--strength", strength, prompt,
                        "-o", str(out))
        assert result.exit_code == 0, result.output
        return out.read_bytes()

    zero, zero_other = gen("z.png", "0"), gen("z2.png", "0", seed="9", prompt="a blue sphere")
    half, half_again = gen("h.png", "0.8"), gen("h2.png", "0.8")
    assert zero == zero_other and half == half_again and half != zero


# ---- --control: ControlNet ------------------------------------------------------------------

CATALOGUE = """\
version: 1
loras:
  - id: coloring-book
    name: Coloring Book
    source: {repo: renderartist/Coloring-Book-Z-Image-Turbo-LoRA, file: Coloring_Book.safetensors, revision: v1}
    kind: style
    triggers: [c0l0ringb00k]
    scale: {recommended: 0.7, range: [0.5, 0.9]}
"""


def test_control_goes_to_fals_controlnet_endpoint_with_only_the_settings_given(fal, tmp_path):
    edges = make_image("png", 64, 64, seed=6)
    (tmp_path / "edges.png").write_bytes(edges)
    result = invoke("--provider", "fal", "--seed", "3", "--size", "512x512", "--control", str(tmp_path / "edges.png"),
                    "--control-scale", "0.7", "--control-end", "0.8", "--preprocess", "canny", "a lighthouse",
                    "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 0, result.output
    (submit,) = fal.hits("submit")
    assert submit.path == "/fal-ai/z-image/turbo/controlnet"
    body = dict(submit.json)
    assert base64.b64decode(body.pop("image_url").removeprefix("data:image/png;base64,")) == edges
    assert {k: body[k] for k in ("control_scale", "control_end", "preprocess", "seed")} == {
        "control_scale": 0.7, "control_end": 0.8, "preprocess": "canny", "seed": 3}
    assert "control_start" not in body and "strength" not in body and "mask_image_url" not in body


def test_control_with_a_lora_goes_to_the_lora_controlnet_endpoint(fal, tmp_path):
    (tmp_path / "loras.yaml").write_text(CATALOGUE)
    result = invoke("--provider", "fal", "--seed", "3", "--size", "512x512", "--lora", "coloring-book:0.6",
                    "--catalogue", str(tmp_path / "loras.yaml"), "--control", "https://example.org/pose.png",
                    "a dancer", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 0, result.output
    (submit,) = fal.hits("submit")
    assert submit.path == "/fal-ai/z-image/turbo/controlnet/lora"
    assert submit.json["image_url"] == "https://example.org/pose.png"
    assert submit.json["loras"][0]["scale"] == 0.6 and submit.json["prompt"] == "c0l0ringb00k, a dancer"
    assert not {"control_scale", "control_start", "control_end", "preprocess"} & set(submit.json)


def test_every_control_problem_at_once_and_nothing_sent(fal, tmp_path):
    (tmp_path / "in.png").write_bytes(make_image("png", 64, 64))
    (tmp_path / "notes.png").write_text("not a picture")
    result = invoke("--provider", "fal", "--seed", "1", "--steps", "12", "--control", str(tmp_path / "notes.png"),
                    "--control-scale", "2.5", "--control-start", "0.9", "--control-end", "0.2", "--preprocess", "sketch",
                    "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1
    for needle in ("--control: ", "notes.png is not a readable image", "--control-scale: 2.5 is not between 0 and 2",
                   "--control-start: 0.9 is after --control-end 0.2", "--preprocess: 'sketch' is not one of none, canny",
                   "steps 12"):
        assert needle in result.output, (needle, result.output)
    orphan = invoke("--provider", "fal", "--seed", "1", "--control-scale", "0.5", "--preprocess", "depth", "x",
                    "-o", str(tmp_path / "o.png"))
    assert orphan.exit_code == 1
    assert "--control-scale: needs --control" in orphan.output and "--preprocess: needs --control" in orphan.output
    both = invoke("--provider", "fal", "--seed", "1", "--image", str(tmp_path / "in.png"), "--control",
                  str(tmp_path / "in.png"), "x", "-o", str(tmp_path / "o.png"))
    assert both.exit_code == 1 and "--control: not with --image" in both.output
    assert fal.requests == []


@pytest.mark.parametrize("name", ["novita", "highway", "aimlapi"])
def test_providers_without_controlnet_refuse_control_before_sending(fake_factory, monkeypatch, tmp_path, name):
    fake = fake_factory(name)
    var = {"novita": "NOVITA_API_KEY", "highway": "HIGHWAY_API_KEY", "aimlapi": "AIMLAPI_KEY"}[name]
    monkeypatch.setenv(var, KEY)
    monkeypatch.setenv(f"LORASCOPE_{name.upper()}_URL", fake.url)
    (tmp_path / "edges.png").write_bytes(make_image("png", 64, 64))
    result = invoke("--provider", name, "--seed", "1", "--size", "512x512", "--control", str(tmp_path / "edges.png"),
                    "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1 and f"mode controlnet is not served by {name}" in result.output, result.output
    assert fake.requests == []


def test_tiny_diffusers_controlnet_from_the_command_line(tmp_path, monkeypatch):
    """`--config controlnet=tiny-random` runs diffusers' ZImageControlNetPipeline: the same call
    gives the same bytes, the control picture and its scale change the image, and fal-only
    settings are refused with the rest before the pipeline loads."""
    pytest.importorskip("diffusers")
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "a.png").write_bytes(make_image("png", 64, 64, seed=4))
    (tmp_path / "b.png").write_bytes(make_image("png", 64, 64, seed=8))

    def gen(name: str, control: str, *extra: str) -> tuple[int, str, bytes | None]:
        out = tmp_path / name
        result = invoke("--provider", "diffusers", "--model", "tiny-random", "--config", "controlnet=tiny-random",
                        "--size", "64x64", "--steps", "2", "--seed", "1", "--control", str(tmp_path / control),
                        *extra, "a red cube", "-o", str(out))
        return result.exit_code, result.output, out.read_bytes() if out.exists() else None

    code, output, first = gen("1.png", "a.png", "--control-scale", "0.7")
    assert code == 0, output
    assert gen("2.png", "a.png", "--control-scale", "0.7")[2] == first
    assert gen("3.png", "b.png", "--control-scale", "0.7")[2] != first
    assert gen("4.png", "a.png", "--control-scale", "0.1")[2] != first
    code, output, _ = gen("5.png", "a.png", "--preprocess", "canny", "--control-start", "0.2")
    assert code == 1 and "preprocess 'canny'" in output and "start/end" in output
    unset = invoke("--provider", "diffusers", "--model", "tiny-random", "--size", "64x64", "--seed", "1",
                   "--control", str(tmp_path / "a.png"), "x", "-o", str(tmp_path / "6.png"))
    assert unset.exit_code == 1 and "needs the diffusers setting `controlnet`" in unset.output
