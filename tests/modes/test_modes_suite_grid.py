"""Image-conditioned suites: `mode`, `images`, `strengths`; the grid LoRA x scale x strength
x image x prompt x seed x provider with a no-LoRA baseline at every strength; every problem
found before the first request, at once, with file:line; the catalogue's usage warnings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lorascope.harness.grid import expand
from lorascope.harness.suite import SuiteError, load_suite
from tests.fakes.images import make_image
from tests.helpers.harness_fakes import CATALOGUE

KINDS = CATALOGUE + """
  - id: dejpeg
    name: DeJPEG
    source: {url: "https://example.test/dejpeg.safetensors", sha256: "%s"}
    kind: restoration
    scale: {recommended: 1.0, range: [0.5, 1.0]}
  - id: adapter
    name: Adapter
    source: {url: "https://example.test/adapter.safetensors", sha256: "%s"}
    kind: training-adapter
    scale: {recommended: 1.0, range: [0.0, 1.0]}
  - id: cine
    name: Cine
    source: {url: "https://example.test/cine.safetensors", sha256: "%s"}
    kind: slider
    scale: {recommended: 3.5, range: [2.0, 4.0]}
""" % ("c" * 64, "d" * 64, "e" * 64)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "inputs").mkdir(parents=True)
    (root / "loras.yaml").write_text(KINDS)
    (root / "inputs" / "photo.png").write_bytes(make_image("png", 64, 64, seed=1))
    (root / "inputs" / "mask.png").write_bytes(make_image("png", 64, 64, seed=2))
    (root / "inputs" / "small-mask.png").write_bytes(make_image("png", 32, 32, seed=2))
    (root / "inputs" / "notes.png").write_text("not a picture")
    return root


def write(project: Path, text: str) -> Path:
    path = project / "suite.yaml"
    path.write_text(text)
    return path


IMG2IMG = """name: restyle
mode: img2img
providers: [fal]
loras: [paint, ink]
scales: [0.5, 1.0]
strengths: [0.3, 0.6, 0.9]
images:
  - {id: photo, image: inputs/photo.png}
  - {id: remote, image: "https://example.org/street.jpg"}
prompts: [an oil painting of a street]
seeds: [1, 2]
size: 512x512
"""


def test_img2img_grid_sweeps_strength_and_image_with_a_baseline_at_each_strength(project):
    grid = expand(load_suite(write(project, IMG2IMG)))
    # (baseline + 2 LoRAs x 2 scales) x 3 strengths x 2 images x 1 prompt x 2 seeds
    assert len(grid.cells) == 5 * 3 * 2 * 2
    baselines = [c for c in grid.cells if not c.loras]
    assert {(c.strength, c.image_id) for c in baselines} == {(s, i) for s in (0.3, 0.6, 0.9) for i in ("photo", "remote")}
    photo = (project / "inputs" / "photo.png").read_bytes()
    cell = next(c for c in grid.cells if c.image_id == "photo" and c.lora == "paint" and c.strength == 0.6)
    assert cell.request.init_image.sha256 == hashlib.sha256(photo).hexdigest()
    assert cell.request.init_image.data == photo and cell.request.strength == 0.6 and cell.request.mode == "img2img"
    assert dict(cell.axes) == {"image": "photo", "strength": 0.6}
    assert "[image=photo,strength=0.6]" in cell.cell_id
    remote = next(c for c in grid.cells if c.image_id == "remote")
    assert remote.request.init_image.url == "https://example.org/street.jpg"
    assert len({c.cell_id for c in grid.cells}) == len(grid.cells)


def test_text_to_image_suites_expand_as_before(project):
    grid = expand(load_suite(write(project, "name: t\nproviders: [fal]\nloras: [paint]\nscales: [0.5]\nprompts: [x]\n")))
    assert [c.axes for c in grid.cells] == [(), ()]
    assert all(c.request.mode == "txt2img" and c.strength is None for c in grid.cells)


def test_inpaint_needs_masks_and_default_strength_is_one(project):
    text = IMG2IMG.replace("mode: img2img", "mode: inpaint").replace("strengths: [0.3, 0.6, 0.9]\n", "")
    text = text.replace("image: inputs/photo.png}", "image: inputs/photo.png, mask: inputs/mask.png}")
    with pytest.raises(SuiteError, match=r"suite.yaml:8: images\[1\]: mode inpaint needs a mask for image .remote."):
        load_suite(write(project, text))
    text = text.replace('image: "https://example.org/street.jpg"', 'image: inputs/photo.png, mask: inputs/mask.png')
    grid = expand(load_suite(write(project, text)))
    assert {c.strength for c in grid.cells} == {1.0}
    assert all(c.request.mask_image is not None and c.request.mode == "inpaint" for c in grid.cells)


def test_every_input_problem_at_once_with_file_and_line(project):
    text = """name: bad
mode: inpaint
providers: [fal, highway, novita]
loras: [paint]
strengths: [0.5]
images:
  - id: a
    image: inputs/missing.png
    mask: inputs/mask.png
  - id: b
    image: inputs/notes.png
    mask: inputs/mask.png
  - id: c
    image: inputs/photo.png
    mask: inputs/small-mask.png
  - id: d
    image: "http://example.org/plain.png"
    mask: inputs/mask.png
prompts: [x]
"""
    path = write(project, text)
    with pytest.raises(SuiteError) as caught:
        expand(load_suite(path))
    problems = caught.value.problems
    text_of = "\n".join(problems)
    assert f"{path}:8: images[0].image: " in text_of and "missing.png not found" in text_of
    assert f"{path}:11: images[1].image: " in text_of and "not a readable image" in text_of
    assert f"{path}:15: images[2].mask: 32x32 differs from its image's 64x64" in text_of
    assert f"{path}:17: images[3].image: 'http://example.org/plain.png' is not an https URL" in text_of
    assert f"{path}:3: providers[2]: novita does not serve mode inpaint" in text_of
    assert "images[2].image: highway takes input images as https URLs only; inputs/photo.png is a local file" in text_of
    assert not any(": fal " in p for p in problems), problems  # fal takes data URIs


def test_mode_fields_outside_their_mode_are_refused(project):
    text = "name: t\nproviders: [fal]\nprompts: [x]\nstrengths: [0.5]\nimages: [{id: a, image: inputs/photo.png}]\n"
    with pytest.raises(SuiteError) as caught:
        load_suite(write(project, text))
    assert "suite.yaml:5: images: given but mode is text-to-image" in str(caught.value)
    assert "suite.yaml:4: strengths: given but mode is text-to-image" in str(caught.value)
    with pytest.raises(SuiteError, match=r"strength\(s\) \[1.5\] outside \[0, 1\]"):
        load_suite(write(project, IMG2IMG.replace("0.9]", "1.5]")))


def test_controlnet_suite_uses_the_control_image_and_settings(project):
    text = """name: cn
mode: controlnet
providers: [fal]
controlnet: {scale: 0.7, end: 0.8, preprocess: canny}
images: [{id: a, image: inputs/photo.png}]
prompts: [x]
"""
    (cell,) = expand(load_suite(write(project, text))).cells
    req = cell.request
    assert req.mode == "controlnet" and req.init_image is None and req.control_image.width == 64
    assert (req.control_scale, req.control_end, req.preprocess, req.control_start) == (0.7, 0.8, "canny", None)
    assert dict(cell.axes) == {"image": "a"}


def test_usage_warnings_are_collected_per_lora(project):
    text = "name: w\nproviders: [fal]\nloras: [dejpeg, adapter, cine, paint]\nscales: [0.5, 1.0]\nprompts: [x]\n"
    warnings = expand(load_suite(write(project, text))).warnings
    assert len(warnings) == 3
    assert "'dejpeg' is a restoration LoRA" in warnings[0]
    assert "'adapter' is a training-adapter LoRA" in warnings[1]
    assert "'cine' is a slider whose useful scales are 2..4; swept over 0.5..1" in warnings[2]
    # with an input image the restoration LoRA is used as meant
    img = IMG2IMG.replace("loras: [paint, ink]", "loras: [dejpeg, paint]")
    assert expand(load_suite(write(project, img))).warnings == []


def test_run_and_dry_run_print_the_usage_warnings(project, monkeypatch):
    from lorascope.cli import app

    monkeypatch.chdir(project)
    monkeypatch.setenv("LORASCOPE_CACHE", str(project / "cache"))
    path = write(project, "name: w\nproviders: [fal]\nloras: [adapter]\nprompts: [x]\n")
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--no-progress"])
    assert "'adapter' is a training-adapter LoRA" in result.output, result.output


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (valid CRC) and holds no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def test_huge_and_hostile_inputs_are_refused_without_decoding(project):
    (project / "inputs" / "huge.png").write_bytes(_png_header_only(10_000, 10_000))
    (project / "inputs" / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    (project / "inputs" / "folder.png").mkdir()
    images = ("images:\n  - {id: photo, image: inputs/photo.png}\n  - {id: huge, image: inputs/huge.png}\n"
              "  - {id: bomb, image: inputs/bomb.png}\n  - {id: dir, image: inputs/folder.png}\n")
    path = write(project, "name: h\nmode: img2img\nproviders: [fal]\nprompts: [x]\n" + images)
    with pytest.raises(SuiteError) as caught:
        expand(load_suite(path))
    text_of = "\n".join(caught.value.problems)
    assert "images[1].image: " in text_of and "is 10000x10000; the limit is 67,108,864 pixels" in text_of
    assert "images[2].image: " in text_of and "bomb.png is not a readable image" in text_of
    assert "images[3].image: " in text_of and "folder.png is not a file" in text_of


def test_the_size_cap_counts_inputs_and_strengths(project):
    with pytest.raises(SuiteError, match=r"the grid has 60 cells \(1 provider/option variant\(s\) x 5 LoRA setting\(s\) "
                                         r"x 6 input/strength pair\(s\) x 1 prompt\(s\) x 2 seed\(s\)\); the limit is 59"):
        expand(load_suite(write(project, IMG2IMG)), max_cells=59)
