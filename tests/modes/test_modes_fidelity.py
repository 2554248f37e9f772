"""Fidelity to the input (evals.fidelity): CLIP image-image cosine and SSIM of each image to
its img2img input, stored per CLIP model and exported as `input_cosine`/`input_ssim` beside
style shift, with the input copied into the run (`input_path`) for the report.

The tiny diffusers run checks the real path (its random VAE does not reproduce the input, so
its numbers say nothing about strength); a blend provider (the input mixed with seeded noise
by `strength`, exactly what img2img's denoising strength means) checks what the numbers do:
~1 at strength 0, lower as the strength grows."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lorascope.harness.models import Cost, Estimate, GenerationResult, Timings
from lorascope.harness.providers.base import Provider
from lorascope.harness.runner import run_suite_async
from lorascope.harness.suite import load_suite
from tests.fakes.images import make_image
from tests.helpers.harness_fakes import CATALOGUE
from tests.modes.style_project import write_style_project


class BlendProvider(Provider):
    """img2img as a straight mix: (1 - strength) * input + strength * noise(seed), plus a faint
    LoRA-scale tint, so fidelity has a known ordering; inpaint mixes only where the mask is
    white and keeps the input's pixels elsewhere."""

    name = "blend"
    modes = frozenset({"img2img", "inpaint"})

    def validate(self, request):
        return []

    def endpoint(self, request):
        return f"blend/{request.mode}"

    def estimate(self, request):
        return Estimate(cost=Cost(usd=0.0, source="free"), seconds=0.0)

    async def generate(self, request, on_submitted=None):
        from lorascope.harness.providers._images import to_image

        with Image.open(io.BytesIO(request.init_image.data)) as im:
            source = np.asarray(im.convert("RGB").resize((request.width, request.height)), dtype=np.float64)
        noise = np.random.default_rng(request.seed).uniform(0, 255, source.shape)
        s = request.strength if request.strength is not None else 0.6
        tint = sum(spec.scale for spec in request.loras) * 4.0 * s
        out = np.clip((1 - s) * source + s * noise + tint, 0, 255)
        if request.mask_image is not None:
            with Image.open(io.BytesIO(request.mask_image.data)) as m:
                repaint = np.asarray(m.convert("L").resize((request.width, request.height)))[..., None] >= 128
            out = np.where(repaint, out, source)
        out = out.astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, format="PNG")
        return GenerationResult(provider="blend", images=[to_image("blend", buffer.getvalue())], seed=request.seed,
                                timings=Timings(total_s=0.0), cost=Cost(usd=0.0, source="free"))


def _photo() -> bytes:
    """A picture with structure (gradients and blocks), so SSIM and CLIP have something to keep."""
    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([x * 4, y * 4, ((x // 16 + y // 16) % 2) * 255], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="PNG")
    return buffer.getvalue()


async def _blend_run(tmp_path, monkeypatch, *, mode: str = "img2img", strengths: str = "[0.0, 0.3, 0.7, 1.0]",
                     mask: bytes | None = None):
    """A run of one LoRA at scale 1 over one structured input at several strengths (img2img,
    or inpaint under `mask`), on the blend provider; returns the run folder."""
    import lorascope.harness.providers as providers

    targets = {**providers._targets(), "blend": f"{__name__}:BlendProvider"}
    monkeypatch.setattr(providers, "_targets", lambda: targets)
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "cache"))
    project = tmp_path / "proj"
    (project / "in").mkdir(parents=True)
    (project / "loras.yaml").write_text(CATALOGUE)
    (project / "in" / "photo.png").write_bytes(_photo())
    masked = ""
    if mask is not None:
        (project / "in" / "mask.png").write_bytes(mask)
        masked = ", mask: in/mask.png"
    (project / "suite.yaml").write_text(
        f"name: fid\nmode: {mode}\nproviders: [blend]\nloras: [paint]\nscales: [1.0]\n"
        f"strengths: {strengths}\nimages: [{{id: photo, image: in/photo.png{masked}}}]\nprompts: [a harbour]\n"
        "seeds: [1]\nsize: 64x64\n")
    summary = await run_suite_async(load_suite(project / "suite.yaml"), tmp_path / "run", progress=False,
                                    handle_sigint=False)
    assert summary.exit_code == 0, summary
    return tmp_path / "run"


async def test_fidelity_falls_as_strength_rises_and_is_one_at_zero(tmp_path, monkeypatch):
    from lorascope.evals.scoring import score_run

    await _blend_run(tmp_path, monkeypatch)
    project = tmp_path / "proj"
    photo = _photo()
    assert score_run(tmp_path / "run", "tiny-random", progress=False).problems == []
    first = pd.read_parquet(tmp_path / "run" / "results.parquet")
    (project / "in" / "photo.png").unlink()  # a re-score reads the copy the first one kept in the run
    assert score_run(tmp_path / "run", "tiny-random", progress=False).problems == []
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert frame[["input_cosine", "input_ssim"]].equals(first[["input_cosine", "input_ssim"]])
    assert {"input_cosine", "input_ssim", "input_path", "style_shift"} <= set(frame.columns)
    assert frame.kept_ssim.isna().all()  # img2img: no mask, nothing measured outside one
    base = frame[frame.lora == ""].set_index("strength").sort_index()
    assert base.loc[0.0, "input_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert base.loc[0.0, "input_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert list(base["input_ssim"]) == sorted(base["input_ssim"], reverse=True)
    assert base["input_ssim"].iloc[-1] < 0.2
    assert base.loc[0.0, "input_cosine"] > base.loc[1.0, "input_cosine"]
    # the input is kept in the run, content-addressed, for the report
    (path,) = set(frame.input_path)
    assert (tmp_path / "run" / path).read_bytes() == photo

    # the report's fidelity-vs-style points: one per (strength, scale), fidelity falling with strength
    from lorascope.evals.fidelity import fidelity_by_strength

    table = fidelity_by_strength(frame)
    assert list(table.strength) == [0.0, 0.3, 0.7, 1.0] and set(table.lora) == {"paint"} and (table.n == 1).all()
    assert list(table.input_ssim) == sorted(table.input_ssim, reverse=True)

    from lorascope.reports.service import write_run_report

    html = write_run_report(tmp_path / "run").read_text()
    assert "Fidelity vs style per strength: SSIM to the input" in html
    assert '<span class="muted">one curve per strength, one point per scale' in html  # not the scale plots' legend
    assert "Fidelity vs style per strength: CLIP cosine to the input" in html
    for strength in ("0", "0.3", "0.7", "1"):
        assert f"strength {strength} scale 1 (style shift" in html
    assert "style shift (mean)" in html and f'href="{path}"' in html  # the input shown, linked full size


async def test_an_input_changed_since_the_run_gets_no_fidelity_and_says_so(tmp_path, monkeypatch):
    from lorascope.evals.scoring import score_run

    run = await _blend_run(tmp_path, monkeypatch)
    (tmp_path / "proj" / "in" / "photo.png").write_bytes(make_image("png", 64, 64, seed=11))
    summary = score_run(run, "tiny-random", progress=False)
    assert any("in/photo.png: changed since the run used it (image 'photo')" in p for p in summary.problems)
    frame = pd.read_parquet(run / "results.parquet")
    assert frame[["input_cosine", "input_ssim"]].isna().all().all() and frame.clip_score.notna().all()


async def test_tiny_diffusers_img2img_run_gets_fidelity_columns_and_rescoring_is_cached(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    from lorascope.evals.scoring import score_run

    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "cache"))
    project = tmp_path / "proj"
    write_style_project(project)
    (project / "in" / "a.png").write_bytes(make_image("png", 64, 64, seed=4))
    (project / "suite.yaml").write_text(
        "name: i2i\nmode: img2img\nproviders:\n  - diffusers: {model: tiny-random}\n"
        "loras: [style]\nscales: [1.0]\nstrengths: [0.0, 0.8]\nimages: [{id: a, image: in/a.png}]\n"
        "prompts: [a red cube]\nseeds: [1]\nsize: 64x64\nsteps: 2\n")
    summary = await run_suite_async(load_suite(project / "suite.yaml"), tmp_path / "run", progress=False,
                                    handle_sigint=False)
    assert summary.exit_code == 0, summary
    first = score_run(tmp_path / "run", "tiny-random", progress=False)
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(frame) == 4 and frame[["input_cosine", "input_ssim"]].notna().all().all()
    assert frame[["input_cosine", "input_ssim"]].abs().le(1.0 + 1e-6).all().all()
    zero = frame[frame.strength == 0.0]  # the same picture with and without the LoRA: the same fidelity
    assert zero.input_ssim.nunique() == 1 and zero.input_cosine.round(6).nunique() == 1
    again = score_run(tmp_path / "run", "tiny-random", progress=False)
    assert first.embedded >= 1 and again.forward_passes == 0  # the input's embedding came from the cache too
    assert pd.read_parquet(tmp_path / "run" / "results.parquet")[["input_cosine", "input_ssim"]].equals(
        frame[["input_cosine", "input_ssim"]])


async def test_an_inpaint_is_measured_outside_its_mask_too(tmp_path, monkeypatch):
    """Inpaint: `kept_ssim` is the SSIM to the input where the mask is dark (what was to stay):
    1 when the provider kept those pixels, whatever it painted inside; `input_ssim` over the
    whole picture falls with the repainted half. The mask is kept in the run for re-scores;
    img2img rows have no kept_ssim."""
    from lorascope.evals.scoring import score_run

    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 32:] = 255  # repaint the right half
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    await _blend_run(tmp_path, monkeypatch, mode="inpaint", strengths="[0.5, 1.0]", mask=buffer.getvalue())
    project = tmp_path / "proj"
    assert score_run(tmp_path / "run", "tiny-random", progress=False).problems == []
    frame = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert len(frame) == 4 and frame.kept_ssim.notna().all()
    # the 11-px SSIM window straddles the mask edge: windows centred in the kept half see a few repainted pixels
    assert (frame.kept_ssim > 0.9).all() and (frame.input_ssim < frame.kept_ssim - 0.2).all()
    (project / "in" / "mask.png").unlink()  # a re-score uses the copy the run kept
    assert score_run(tmp_path / "run", "tiny-random", progress=False).problems == []
    again = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert again.kept_ssim.tolist() == frame.kept_ssim.tolist()
    (project / "in" / "mask.png").write_bytes(_photo())  # another file under the mask's name
    said = score_run(tmp_path / "run", "tiny-random", progress=False).problems
    assert any("mask changed since the run used it (image 'photo'); measured with the copy the run kept" in p
               for p in said)
    assert pd.read_parquet(tmp_path / "run" / "results.parquet").kept_ssim.tolist() == frame.kept_ssim.tolist()


async def test_the_inpaint_report_plots_fidelity_outside_the_mask(tmp_path, monkeypatch):
    """The report of an inpaint run draws `kept_ssim` against style, one curve per strength."""
    await test_an_inpaint_is_measured_outside_its_mask_too(tmp_path, monkeypatch)
    from lorascope.reports.service import write_run_report

    html = write_run_report(tmp_path / "run").read_text()
    assert "Fidelity vs style per strength: SSIM outside the mask" in html
    assert "Fidelity vs style per strength: SSIM to the input" in html
