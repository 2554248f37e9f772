"""`lorascope demo` end to end in a temporary folder, then its report in Chromium; and a
second run with one LoRA changed, compared and rendered with `report --compare`."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from report_browser import browser_context, load_all_images, open_page, screenshot
from safetensors import safe_open
from typer.testing import CliRunner

from lorascope.cli import app
from lorascope.reports.demo import (
    DEMO_INPUT,
    DEMO_LORAS,
    DEMO_PROMPTS,
    DEMO_SCALES,
    DEMO_SEEDS,
    DEMO_STRENGTHS,
    tiny_linear_shapes,
)

#: the img2img sweep: (baseline + LoRAs x scales) at each strength, one prompt, one seed, one input
IMG2IMG_CELLS = len(DEMO_STRENGTHS) * (1 + len(DEMO_LORAS) * len(DEMO_SCALES))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    mp = pytest.MonkeyPatch()
    mp.setenv("LORASCOPE_CACHE", str(root / "user-cache"))
    try:
        result = CliRunner().invoke(app, ["demo", "--out", str(root / "out")])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert f"report: {root / 'out' / 'run' / 'report.html'}" in result.output
        assert f"pick by eye: lorascope review {root / 'out' / 'run'}" in result.output
        assert f"img2img report: {root / 'out' / 'img2img' / 'report.html'}" in result.output
        yield root / "out"
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def browser():
    with browser_context() as context:
        yield context


def test_demo_writes_loras_in_each_key_format_catalogue_suite_and_run(demo_dir):
    from lorascope.harness.suite import load_suite
    from lorascope.registry.catalogue import load_catalogue

    prefixes = {"diffusers": "transformer.", "ai-toolkit": "diffusion_model.", "kohya": "lora_unet_"}
    for lora_id, _, key_format, *_ in DEMO_LORAS:
        path = demo_dir / "loras" / f"{lora_id}.{key_format}.safetensors"
        with safe_open(str(path), framework="numpy") as fh:
            assert all(k.startswith(prefixes[key_format]) for k in fh.keys()), key_format
    catalogue = load_catalogue(demo_dir / "loras.yaml")
    suite = load_suite(demo_dir / "suite.yaml")
    assert {lora_id for lora_id, *_ in DEMO_LORAS} <= {e.id for e in catalogue.entries}
    assert suite.providers[0].settings == {"model": "tiny-random"}

    run = demo_dir / "run"
    results = pd.read_parquet(run / "results.parquet")
    expected = len(DEMO_PROMPTS) * len(DEMO_SEEDS) * (1 + len(DEMO_LORAS) * len(DEMO_SCALES))
    assert len(results) == expected and (results.status == "succeeded").all()
    assert results.clip_score.notna().all() and results[results.lora != ""].style_shift.notna().all()
    assert (run / "report.html").is_file()
    assert len(list((run / "thumbs").glob("*.jpg"))) == results.image_sha256.nunique()


def test_demo_runs_again_in_the_same_folder_generating_nothing(demo_dir):
    """Re-runnable: the same command again resumes the stored run (nothing regenerated),
    rewrites the same LoRA files and catalogue byte for byte, and reuses every thumbnail."""
    import hashlib

    def digests() -> dict[str, str]:
        files = [*(demo_dir / "loras").glob("*.safetensors"), demo_dir / "loras.yaml", demo_dir / "suite.yaml",
                 demo_dir / "suite-img2img.yaml", demo_dir / DEMO_INPUT,
                 *(demo_dir / "run" / "thumbs").glob("*.jpg")]
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = digests()
    thumbs_mtime = {p: p.stat().st_mtime_ns for p in (demo_dir / "run" / "thumbs").glob("*.jpg")}
    total = len(DEMO_PROMPTS) * len(DEMO_SEEDS) * (1 + len(DEMO_LORAS) * len(DEMO_SCALES))
    result = CliRunner().invoke(app, ["demo", "--out", str(demo_dir)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"({total} cells: 0 generated now, {total} already stored, 0 failed)" in result.output
    assert f"({IMG2IMG_CELLS} cells at strengths" in result.output
    assert f"0 generated now, {IMG2IMG_CELLS} already stored, 0 failed)" in result.output.split("img2img run:", 1)[1]
    assert f"report: {demo_dir / 'run' / 'report.html'}" in result.output
    # the evals stage's recommendation per LoRA, beside the catalogue's
    for lora_id, *_, recommended, _style in DEMO_LORAS:
        assert f"  {lora_id} on diffusers: scale " in result.output
        assert f"(catalogue {recommended:g}): " in result.output.split(f"  {lora_id} on diffusers: scale ", 1)[1].splitlines()[0]
    assert digests() == before
    assert {p: p.stat().st_mtime_ns for p in (demo_dir / "run" / "thumbs").glob("*.jpg")} == thumbs_mtime


def test_demo_img2img_sweep_is_run_scored_with_fidelity_and_reported(demo_dir):
    from PIL import Image

    run = demo_dir / "img2img"
    results = pd.read_parquet(run / "results.parquet")
    assert len(results) == IMG2IMG_CELLS and (results.status == "succeeded").all()
    assert sorted(results.strength.unique()) == DEMO_STRENGTHS and set(results.init_image) == {"photo"}
    assert results[["input_cosine", "input_ssim", "clip_score"]].notna().all().all()
    assert results[results.lora != ""].style_shift.notna().all()
    (kept,) = set(results.input_path)
    assert (run / kept).read_bytes() == (demo_dir / DEMO_INPUT).read_bytes()
    with Image.open(demo_dir / DEMO_INPUT) as im:
        assert im.size == (int(results.width.iloc[0]), int(results.height.iloc[0]))


def test_the_img2img_reports_real_suite_is_an_img2img_suite_its_hosts_serve(demo_dir):
    """The random-weights banner's "run it for real" suite keeps the run's mode, inputs and
    strengths, and lists only hosts that serve img2img and take a local input file (fal, not
    HighwayAPI, which fetches inputs by URL; not the text-only hosts), with their keys only."""
    import yaml

    from lorascope.harness.grid import setup_providers
    from lorascope.harness.input_images import load_inputs
    from lorascope.harness.suite import parse_suite
    from lorascope.reports.howto import random_weight_banner
    from lorascope.reports.sources import load_run_data

    banner = random_weight_banner(load_run_data(demo_dir / "img2img"))
    suite_text, shell = (s.code for s in banner.snippets)
    written = yaml.safe_load(suite_text)
    assert written["mode"] == "img2img" and written["strengths"] == DEMO_STRENGTHS
    assert written["images"] == [{"id": "photo", "image": DEMO_INPUT}]
    assert [p if isinstance(p, str) else next(iter(p)) for p in written["providers"]] == ["fal", "diffusers"]
    assert "FAL_KEY" in shell and not any(k in shell for k in ("HIGHWAY_API_KEY", "NOVITA_API_KEY", "AIMLAPI_KEY"))
    (demo_dir / "real-suite.yaml").write_text(suite_text)  # beside the demo's inputs, as a user would save it
    suite = parse_suite(suite_text, demo_dir / "real-suite.yaml")
    _, problems = setup_providers(suite)
    assert problems == []
    assert load_inputs(suite)[1] == []


def test_demo_img2img_report_shows_the_input_at_the_head_of_each_loras_grid(demo_dir, browser):
    page, log = open_page(browser, (demo_dir / "img2img" / "report.html").as_uri())
    images = load_all_images(page)
    assert images and [i["src"] for i in images if i["w"] == 0] == []
    kept = pd.read_parquet(demo_dir / "img2img" / "results.parquet").input_path.iloc[0]
    for lora_id, *_ in DEMO_LORAS:
        section = page.locator(f'section.lora[data-lora="{lora_id}"]')
        # rows = strength, and each row's head shows the input picture it starts from
        rows = section.locator("table.grid tbody tr")
        assert rows.count() == len(DEMO_STRENGTHS)
        for r in range(rows.count()):
            figure = rows.nth(r).locator("th.rowhead figure.input-fig")
            assert figure.count() == 1 and figure.is_visible() and "input photo" in figure.inner_text()
            assert figure.locator("a.thumb").get_attribute("href") == kept
            assert figure.locator("img").evaluate("i => i.naturalWidth") > 0
        assert section.locator(".inputs").count() == 0  # the block above the grid is for readers without JS
        # fidelity against style, one curve per strength
        plot = section.locator(".plot", has_text="Fidelity vs style per strength: SSIM to the input")
        assert plot.count() == 1 and plot.is_visible()
        legend = plot.locator(".legend").inner_text()
        assert all(f"strength {s:g}" in legend for s in DEMO_STRENGTHS)
    assert (log.console_errors, log.page_errors, log.failed_requests, log.external_requests) == ([], [], [], [])


def test_demo_report_in_the_browser(demo_dir, browser):
    import re

    html = (demo_dir / "run" / "report.html").read_text(encoding="utf-8")
    assert re.findall(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<]*", html) == []  # offline: no URL anywhere
    page, log = open_page(browser, (demo_dir / "run" / "report.html").as_uri())
    images = load_all_images(page)
    assert images and [i["src"] for i in images if i["w"] == 0] == []
    assert "yes (tiny-random)" in page.locator("#summary").inner_text()  # the CLIP label, not its cache id
    banner = page.locator("section.banner").first.inner_text()
    assert "random-weight" in banner
    for needle in ("FAL_KEY", "NOVITA_API_KEY", "HIGHWAY_API_KEY", "AIMLAPI_KEY", "Tongyi-MAI/Z-Image-Turbo",
                   "- fal", "- highway", "- aimlapi"):
        assert needle in banner, needle
    for lora_id, *_ in DEMO_LORAS:
        grid = page.locator(f'table.grid[data-lora="{lora_id}"]')
        assert grid.locator("thead th").count() == 2 + len(DEMO_SCALES)
        assert grid.locator("tbody tr").count() == len(DEMO_PROMPTS) * len(DEMO_SEEDS)
        assert grid.locator("figure.fig img").count() == len(DEMO_PROMPTS) * len(DEMO_SEEDS) * (1 + len(DEMO_SCALES))
    # per LoRA: style shift, CLIPScore and the random-weight preference scorer (hpsv2:tiny-random)
    assert page.locator("svg path.series").count() == 3 * len(DEMO_LORAS)
    assert page.get_by_text("hpsv2:tiny-random vs scale", exact=False).count() >= len(DEMO_LORAS)
    assert page.locator("table.recs tbody tr").count() == len(DEMO_LORAS)
    assert log.problems() == []
    page.set_viewport_size({"width": 1400, "height": 1800})
    screenshot(page, "report-demo.png")


def test_a_changed_lora_shows_first_in_the_comparison_report(demo_dir, browser, monkeypatch, tmp_path):
    """Same suite, one LoRA file replaced: its cells drift (the local pipeline is
    deterministic, so every other cell is bit-identical) and lead the comparison."""
    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.runner import run_suite
    from lorascope.harness.store import SharedCache
    from lorascope.harness.suite import load_suite

    changed_id, _, key_format, *_ = DEMO_LORAS[0]
    work = tmp_path / "changed"
    work.mkdir()
    for name in ("loras.yaml", "suite.yaml"):
        (work / name).write_text((demo_dir / name).read_text())
    (work / "loras").mkdir()
    for path in (demo_dir / "loras").glob("*.safetensors"):
        (work / "loras" / path.name).write_bytes(path.read_bytes())
    write_lora(work / "loras" / f"{changed_id}.{key_format}.safetensors", tiny_linear_shapes(),
               key_format=key_format, rank=4, seed=999, strength=1.0)
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "user-cache"))
    # Playwright's sync API keeps an event loop in this thread: the runner's asyncio.run
    # gets a thread of its own. The demo's generation cache makes unchanged cells free.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(run_suite, load_suite(work / "suite.yaml"), work / "run", progress=False,
                    cache=SharedCache(demo_dir / ".cache")).result()

    baseline, current = demo_dir / "run", work / "run"
    runner = CliRunner()
    # the new run is not scored yet: its report says so and still shows images, latency, cost
    unscored = runner.invoke(app, ["report", str(current)])
    assert unscored.exit_code == 0, unscored.output
    html = (current / "report.html").read_text()
    assert 'id="not-scored"' in html and "Latency and cost per provider" in html and "<svg" not in html
    compared = runner.invoke(app, ["compare", str(baseline), str(current), "--clip", "tiny-random", "--no-progress"])
    assert compared.exit_code in (0, 1), compared.output
    verdicts = json.loads((current / "compare.json").read_text())["cells"]
    changed = [c for c in verdicts if c["verdict"] != "same"]
    assert changed and {c["lora"] for c in changed} == {changed_id}

    result = runner.invoke(app, ["report", "--compare", str(baseline), str(current)])
    assert result.exit_code == 0, result.output
    report = current / "compare.html"
    assert f"report: {report}" in result.output

    page, log = open_page(browser, report.as_uri())
    page.locator("details#unchanged-cells").evaluate("d => d.open = true")
    images = load_all_images(page)
    assert images and [i["src"] for i in images if i["w"] == 0] == []
    cells = page.locator("article.compare-cell")
    assert cells.count() == len(verdicts)
    first = cells.first
    assert first.get_attribute("data-drifted") == "true" and changed_id in first.inner_text()
    assert page.locator('#drifted article.compare-cell').count() == len(changed)
    assert first.locator("figure.fig").count() == 2  # baseline and current side by side
    assert first.locator("table.data tbody tr").count() >= 2  # their numbers
    assert log.problems() == []
    page.set_viewport_size({"width": 1400, "height": 1400})
    screenshot(page, "report-compare.png")

    # without compare.json, `report --compare` asks evals to compare first (same verdicts)
    (current / "compare.json").unlink()
    again = runner.invoke(app, ["report", "--compare", str(baseline), str(current)])
    assert again.exit_code == 0, again.output
    redone = json.loads((current / "compare.json").read_text())["cells"]
    assert [c["verdict"] for c in redone] == [c["verdict"] for c in verdicts]


def test_report_of_a_folder_that_is_not_a_run_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such run folder" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "not a run folder" in result.output


def test_compare_report_numbers_come_from_the_comparisons_clip_model(demo_dir, tmp_path):
    """A run scored later with another CLIP model: the comparison's sides still show the
    numbers of the model the verdicts were made with, never one model's score beside
    another model's delta."""
    import sqlite3

    from lorascope.evals.results import write_scores
    from lorascope.evals.session import copy_run
    from lorascope.reports.compare_sources import load_compare_data

    base, current = copy_run(demo_dir / "run", tmp_path / "base"), copy_run(demo_dir / "run", tmp_path / "current")
    compared = CliRunner().invoke(app, ["compare", str(base), str(current), "--clip", "tiny-random", "--no-progress"])
    assert compared.exit_code == 0, compared.output
    with sqlite3.connect(base / "run.db") as conn:  # then another model scores the baseline (latest now)
        rows = conn.execute("SELECT cell_id, image_index, image_sha256 FROM scores WHERE clip_model = ?",
                            ("tiny-random-clip-v1",)).fetchall()
        write_scores(conn, "open_clip:other", "other", [(*r, 9.0, 0.9, 0.9, 0.9, 0.9, 0.9) for r in rows])
    data = load_compare_data(base, current)
    clip = [m for cell in data.cells for m in cell.metrics if m.name == "clip_score"]
    assert len(clip) == len(data.cells)
    assert all(m.baseline != 9.0 and m.baseline == m.current and m.delta == 0.0 for m in clip)


def test_compare_report_redoes_a_stale_comparison(demo_dir, tmp_path):
    """compare.json written, then the run changed (one image regenerated differently): the
    report must not show the old verdicts beside the new picture; it compares again."""
    import hashlib
    import sqlite3

    from PIL import Image, ImageOps

    from lorascope.evals.session import copy_run
    from lorascope.reports.compare_sources import load_compare_data

    base, current = copy_run(demo_dir / "run", tmp_path / "base"), copy_run(demo_dir / "run", tmp_path / "current")
    compared = CliRunner().invoke(app, ["compare", str(base), str(current), "--clip", "tiny-random", "--no-progress"])
    assert compared.exit_code == 0, compared.output
    assert {c["verdict"] for c in json.loads((current / "compare.json").read_text())["cells"]} == {"same"}
    written = (current / "compare.json").stat().st_mtime_ns
    assert {c.verdict for c in load_compare_data(base, current).cells} == {"same"}
    assert (current / "compare.json").stat().st_mtime_ns == written  # up to date: read, not redone
    with sqlite3.connect(current / "run.db") as conn:
        gid, idx, rel = conn.execute("SELECT generation_id, idx, path FROM images LIMIT 1").fetchone()
        new_rel = "images/regenerated.png"
        ImageOps.invert(Image.open(current / rel).convert("RGB")).save(current / new_rel)
        sha = hashlib.sha256((current / new_rel).read_bytes()).hexdigest()
        conn.execute("UPDATE images SET path = ?, sha256 = ? WHERE generation_id = ? AND idx = ?",
                     (new_rel, sha, gid, idx))
    data = load_compare_data(base, current)
    changed = [c for c in data.cells if c.verdict != "same"]
    assert len(changed) == 1 and changed[0].verdict == "regressed"
    assert changed[0].current.image == current / new_rel
    redone = json.loads((current / "compare.json").read_text())
    assert redone["overall"] == "regressed"  # compare.json brought up to date as well
