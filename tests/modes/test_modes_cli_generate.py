"""`lorascope generate --image/--mask/--strength`: what goes over the wire to fal's loopback
fake (the image-to-image and inpaint endpoints, the input as a data URI), every input problem
listed at once before anything is sent, and the same options on the tiny local pipeline."""

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


@pytest.fixture
def fal(fake_factory, monkeypatch):
    fake = fake_factory("fal")
    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.setenv("LORASCOPE_FAL_URL", fake.url)
    return fake


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
