"""An img2img grid run end to end on the tiny local pipeline: stored with strength and image
id as result columns, re-run for free, and the report's grid data carries both as axes. The
example suite expands as documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from lorascope.harness.grid import expand
from lorascope.harness.runner import run_suite_async
from lorascope.harness.suite import load_suite
from tests.fakes.images import make_image
from tests.helpers.harness_fakes import CATALOGUE
from tests.modes.style_project import write_style_project

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("diffusers")


def test_example_suite_expands_with_a_baseline_per_strength():
    grid = expand(load_suite(ROOT / "suites" / "img2img-smoke.yaml"))
    # (baseline + 2 LoRAs x 3 scales) x 3 strengths x 1 image x 1 prompt x 1 seed
    assert len(grid.cells) == 21
    assert sorted(c.strength for c in grid.cells if not c.loras) == [0.3, 0.6, 0.9]
    assert all(c.request.init_image.mime == "image/jpeg" and c.request.init_image.width == 512 for c in grid.cells)
    assert grid.warnings == []  # dejpeg is a restoration LoRA, used here as meant


async def test_img2img_run_stores_strength_and_image_and_reruns_for_free(tmp_path, monkeypatch):

    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "cache"))
    project = tmp_path / "proj"
    write_style_project(project)
    (project / "in" / "a.png").write_bytes(make_image("png", 64, 64, seed=4))
    (project / "in" / "b.png").write_bytes(make_image("png", 64, 64, seed=8))
    (project / "suite.yaml").write_text(
        "name: i2i\nmode: img2img\nproviders:\n  - diffusers: {model: tiny-random}\n"
        "loras: [style]\nscales: [1.0]\nstrengths: [0.0, 0.5]\n"
        "images: [{id: a, image: in/a.png}, {id: b, image: in/b.png}]\n"
        "prompts: [a red cube]\nseeds: [1]\nsize: 64x64\nsteps: 2\n")
    suite = load_suite(project / "suite.yaml")
    summary = await run_suite_async(suite, tmp_path / "run", progress=False, handle_sigint=False)
    assert summary.exit_code == 0, summary
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(frame) == 8 and set(frame.status) == {"succeeded"}
    assert sorted(zip(frame.init_image, frame.strength, frame.lora)) == sorted(
        (i, s, lo) for i in "ab" for s in (0.0, 0.5) for lo in ("", "style"))
    assert set(frame["axes"]) == {"{}"}  # strength and image are columns, not provider option sweeps
    # strength 0 returns the input through the VAE: the LoRA cannot change it
    zero = frame[frame.strength == 0.0].groupby("init_image").image_sha256.nunique()
    assert (zero == 1).all()
    half = frame[frame.strength == 0.5]
    assert half.groupby("init_image").image_sha256.nunique().eq(2).all()  # the LoRA changes the picture
    assert frame[frame.strength == 0.5].image_sha256.nunique() == 4  # and each input gives its own

    again = await run_suite_async(load_suite(project / "suite.yaml"), tmp_path / "run", progress=False,
                                  handle_sigint=False)
    assert sum(p.sent for p in again.providers.values()) == 0 and sum(p.stored for p in again.providers.values()) == 8

    from lorascope.reports.service import write_run_report

    html = write_run_report(tmp_path / "run").read_text()
    data = json.loads(re.search(r'<script[^>]*id="grid-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    axes = {a["id"]: [v["key"] for v in a["values"]] for a in data["axes"]}
    assert sorted(axes["strength"]) == ["0", "0.5"] and sorted(axes["init_image"]) == ["a", "b"]
    # a LoRA's grid opens as strength x scale, at the first input, prompt and seed
    (style,) = [s for s in data["sections"] if s["anchor"] == "lora-style"]
    assert (style["default"]["rows"], style["default"]["cols"]) == (["strength"], ["scale"])
    assert style["default"]["fixed"]["init_image"] in ("a", "b") and "prompt" in style["default"]["fixed"]


async def test_fal_img2img_suite_runs_against_the_fake_and_is_never_paid_twice(tmp_path, monkeypatch):
    """The example suite shape on fal's loopback fake: a local input goes as a data URI to
    the image-to-image endpoints, every strength has its baseline, a re-run sends nothing."""
    import base64

    from tests.fakes import TEST_KEY, FalFake

    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "cache"))
    project = tmp_path / "proj"
    (project / "in").mkdir(parents=True)
    (project / "loras.yaml").write_text(CATALOGUE)
    photo = make_image("jpeg", 64, 64, seed=6)
    (project / "in" / "photo.jpg").write_bytes(photo)
    (project / "suite.yaml").write_text(
        "name: fal-i2i\nmode: img2img\nproviders:\n  - fal: {concurrency: 2}\nloras: [paint]\nscales: [0.8]\n"
        "strengths: [0.4, 0.8]\nimages: [{id: photo, image: in/photo.jpg}]\nprompts: [a harbour]\nseeds: [1]\n"
        "size: 512x512\n")
    with FalFake(key=TEST_KEY) as fake:
        monkeypatch.setenv("FAL_KEY", TEST_KEY)
        monkeypatch.setenv("LORASCOPE_FAL_URL", fake.url)
        summary = await run_suite_async(load_suite(project / "suite.yaml"), tmp_path / "r", progress=False,
                                        handle_sigint=False)
        assert summary.exit_code == 0, summary
        submits = fake.hits("submit")
        again = await run_suite_async(load_suite(project / "suite.yaml"), tmp_path / "r", progress=False,
                                      handle_sigint=False)
        assert len(fake.hits("submit")) == 4 and sum(p.sent for p in again.providers.values()) == 0
    paths = sorted(s.path for s in submits)
    assert paths == ["/fal-ai/z-image/turbo/image-to-image"] * 2 + ["/fal-ai/z-image/turbo/image-to-image/lora"] * 2
    assert sorted(s.json["strength"] for s in submits) == [0.4, 0.4, 0.8, 0.8]
    for s in submits:
        assert base64.b64decode(s.json["image_url"].removeprefix("data:image/jpeg;base64,")) == photo
    frame = pd.read_parquet(tmp_path / "r" / "results.parquet")
    assert sorted(zip(frame.strength, frame.lora)) == [(0.4, ""), (0.4, "paint"), (0.8, ""), (0.8, "paint")]
    assert set(frame.endpoint) == {"fal-ai/z-image/turbo/image-to-image", "fal-ai/z-image/turbo/image-to-image/lora"}
    db = (tmp_path / "r" / "run.db").read_bytes()
    assert base64.b64encode(photo)[:40] not in db  # the input's bytes are not copied into run.db
