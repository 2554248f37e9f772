"""The input picture at the head of the grid rows, in Chromium, on a real img2img run (tiny
random-weight Z-Image pipeline, two inputs, two strengths, scored with the tiny CLIP, which
keeps the inputs' copies in the run). Each head's input is checked by its data-sha against the
sha256 the run recorded for that input (run.db `run_inputs`) and the bytes of the file the
suite used; the cells are checked by content hash as in test_reports_grid_browser."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from report_browser import browser_context, load_all_images, open_page, screenshot

from lorascope.reports.service import write_run_data_report, write_run_report
from tests.modes.style_project import write_style_project

pytest.importorskip("diffusers")

GRID = '[data-grid="lora-style"]'
INPUTS = ("a", "b")
STRENGTHS = (0.3, 0.8)
SCALES = (0.5, 1.0)


@pytest.fixture(scope="module")
def browser():
    with browser_context() as context:
        yield context


@pytest.fixture(scope="module")
def i2i(tmp_path_factory):
    """(run folder, {input id: sha256 of the suite's file}, the unscored run's grid inputs)."""
    from lorascope.evals.scoring import score_run
    from lorascope.harness.runner import run_suite_async
    from lorascope.harness.suite import load_suite
    from lorascope.reports.build_run import build_run_view
    from lorascope.reports.sources import load_run_data
    from tests.fakes.images import make_image

    root = tmp_path_factory.mktemp("i2i-inputs")
    mp = pytest.MonkeyPatch()
    mp.setenv("LORASCOPE_CACHE", str(root / "cache"))
    try:
        project = root / "proj"
        write_style_project(project)
        shas = {}
        for key, seed in zip(INPUTS, (4, 8)):
            data = make_image("png", 64, 64, seed=seed)
            (project / "in" / f"{key}.png").write_bytes(data)
            shas[key] = hashlib.sha256(data).hexdigest()
        (project / "suite.yaml").write_text(
            "name: i2i-heads\nmode: img2img\nproviders:\n  - diffusers: {model: tiny-random}\n"
            f"loras: [style]\nscales: [{', '.join(map(str, SCALES))}]\n"
            f"strengths: [{', '.join(map(str, STRENGTHS))}]\n"
            "images: [{id: a, image: in/a.png}, {id: b, image: in/b.png}]\n"
            "prompts: [a red cube]\nseeds: [1]\nsize: 64x64\nsteps: 2\n")
        run = root / "run"
        suite = load_suite(project / "suite.yaml")
        with ThreadPoolExecutor(1) as pool:  # its own event loop: Playwright's may already run in this thread
            summary = pool.submit(asyncio.run, run_suite_async(suite, run, progress=False, handle_sigint=False)).result()
        assert summary.exit_code == 0, summary
        unscored = build_run_view(load_run_data(run)).grid.inputs
        assert score_run(run, "tiny-random", progress=False).problems == []
        yield run, shas, unscored
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def report(i2i):
    return write_run_report(i2i[0])


def _recorded(run) -> dict[str, str]:
    """{input id: sha256} as the run recorded its inputs' copies."""
    with sqlite3.connect(run / "run.db") as conn:
        return dict(conn.execute("SELECT input_id, input_sha256 FROM run_inputs"))


def _row_heads(page) -> list[list[str]]:
    """Per body row: the data-sha of each input in its head."""
    return page.eval_on_selector_all(
        f"{GRID} tbody tr", "trs => trs.map(tr => Array.from(tr.querySelectorAll('th.rowhead figure.input-fig'))"
        ".map(f => f.getAttribute('data-sha')))")


def _shown(page) -> set[str]:
    return set(page.eval_on_selector_all(f'{GRID} figure.fig[data-status="ok"]',
                                         "els => els.map(e => e.getAttribute('data-sha'))"))


def _expected(run, **where) -> set[str]:
    frame = pd.read_parquet(run / "results.parquet")
    for column, value in where.items():
        frame = frame[frame[column].isin(value if isinstance(value, (list, tuple)) else [value])]
    return set(frame.image_sha256)


def test_the_run_records_the_inputs_it_was_made_from(i2i):
    run, shas, _ = i2i
    assert _recorded(run) == shas  # the heads below are checked against this record


def test_rows_of_strength_show_the_fixed_input_and_picking_the_other_changes_every_head(browser, report, i2i):
    run, shas, _ = i2i
    page, log = open_page(browser, report.as_uri())
    table = page.locator(f"{GRID} table.grid")
    assert (table.get_attribute("data-rows"), table.get_attribute("data-cols")) == ("strength", "scale")
    picker = f'{GRID} .value-pick[data-axis="init_image"]'
    assert page.locator(f'{picker} button[aria-pressed="true"]').get_attribute("data-value") == "a"
    assert _row_heads(page) == [[shas["a"]]] * len(STRENGTHS)
    assert _shown(page) == _expected(run, init_image="a")
    # the head's thumbnail is the run's stored copy, linked full size, and it loads
    head = page.locator(f"{GRID} tbody tr").first.locator("figure.input-fig")
    href = head.locator("a.thumb").get_attribute("href")
    assert (run / href).read_bytes() == (run.parent / "proj" / "in" / "a.png").read_bytes()
    assert "input a" in head.inner_text()
    images = load_all_images(page)
    assert images and [i["src"] for i in images if i["w"] == 0] == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400  # the page still fits
    screenshot(page, "report-inputs-rows-strength.png")

    page.click(f'{picker} button[data-value="b"]')
    assert _row_heads(page) == [[shas["b"]]] * len(STRENGTHS)
    assert _shown(page) == _expected(run, init_image="b")
    assert log.problems() == []


def test_image_on_rows_gives_each_row_its_own_input_and_on_columns_the_column_heads(browser, report, i2i):
    run, shas, _ = i2i
    page, log = open_page(browser, report.as_uri())
    page.select_option(f'{GRID} select[data-role="rows"]', "init_image")
    rows = page.locator(f"{GRID} tbody tr")
    keys = rows.evaluate_all("trs => trs.map(tr => tr.getAttribute('data-init-image'))")
    assert sorted(keys) == sorted(INPUTS) and rows.first.locator("th.rowhead .pid").inner_text() == f"image {keys[0]}"
    assert _row_heads(page) == [[shas[k]] for k in keys]

    page.select_option(f'{GRID} select[data-role="columns"]', "init_image")  # image across, strength down
    table = page.locator(f"{GRID} table.grid")
    assert table.get_attribute("data-cols") == "init_image"
    heads = page.eval_on_selector_all(
        f"{GRID} thead th[data-init-image]",
        "ths => ths.map(th => [th.getAttribute('data-init-image'), th.querySelector('figure.input-fig').getAttribute('data-sha')])")
    assert sorted(heads) == [[k, shas[k]] for k in INPUTS]
    assert all(head == [] for head in _row_heads(page))  # the columns say it; the rows do not repeat it
    assert log.problems() == []


def test_stacked_inputs_show_every_input_in_the_row_head_labelled_by_id(browser, report, i2i):
    run, shas, _ = i2i
    page, log = open_page(browser, report.as_uri())
    page.click(f'{GRID} .value-pick[data-axis="init_image"] button[data-value="*"]')
    assert _row_heads(page) == [[shas[k] for k in INPUTS]] * len(STRENGTHS)
    labels = page.locator(f"{GRID} tbody tr").first.locator("figure.input-fig figcaption span").all_inner_texts()
    assert labels == [f"input {k}" for k in INPUTS]
    assert _shown(page) == _expected(run)
    # each stacked cell names its input
    stack_labels = page.locator(f"{GRID} tbody tr").first.locator("td").first.locator(".stackval").all_inner_texts()
    assert stack_labels == [f"image {k}" for k in INPUTS]
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    assert log.problems() == []


def test_the_input_opens_in_the_viewer_and_can_be_compared_with_an_output(browser, report, i2i):
    run, shas, _ = i2i
    page, log = open_page(browser, report.as_uri())
    head = page.locator(f"{GRID} tbody tr").first.locator("figure.input-fig")
    href = head.locator("a.thumb").get_attribute("href")
    head.locator("a.thumb").click()
    viewer = page.locator("dialog#viewer")
    assert viewer.evaluate("d => d.open") and viewer.locator("img").get_attribute("src") == href
    assert "input a" in viewer.locator("p").inner_text()
    page.keyboard.press("Escape")
    assert not viewer.evaluate("d => d.open")

    head.locator("button.pick").click()
    page.locator(f"{GRID} tbody tr").first.locator("td figure.fig button.pick").last.click()
    page.click("#compare-tray button.open-compare")
    panels = page.locator("dialog#compare .cmp-side > figure.cmp-panel")
    assert panels.first.get_attribute("data-sha") == shas["a"] and panels.count() == 2
    assert log.problems() == []


def test_a_text_to_image_grid_has_no_input_in_any_head(browser, scored_run, tmp_path):
    report = write_run_data_report(scored_run, tmp_path / "t2i.html")
    page, log = open_page(browser, report.as_uri())
    assert page.locator("table.grid").count() >= 2
    assert page.locator("figure.input-fig").count() == 0 and page.locator("noscript .inputs").count() == 0
    assert page.evaluate("JSON.parse(document.getElementById('grid-data').textContent).inputs") is None
    assert log.problems() == []


def test_an_unscored_or_damaged_copy_is_shown_as_missing_with_the_reason(i2i, tmp_path):
    from lorascope.reports.build_run import build_run_view
    from lorascope.reports.sources import load_run_data

    run, shas, unscored = i2i
    # before `lorascope score` the run keeps no copy: the heads say how to get one
    assert set(unscored) == set(INPUTS) and {i.status for i in unscored.values()} == {"missing"}
    assert all("lorascope score" in i.reason for i in unscored.values())
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("thumbs", "report.html"))
    kept = dict(sqlite3.connect(copy / "run.db").execute("SELECT input_id, input_path FROM run_inputs"))
    (copy / kept["a"]).write_bytes(b"not the picture")
    inputs = build_run_view(load_run_data(copy)).grid.inputs
    assert inputs["a"].status == "missing" and "damaged" in inputs["a"].reason and inputs["a"].sha == ""
    assert inputs["b"].status == "ok" and inputs["b"].sha == shas["b"]


def test_without_javascript_the_section_still_shows_its_input(browser, report, i2i):
    run, shas, _ = i2i
    page = browser.new_page()
    cdp = browser.new_cdp_session(page)
    cdp.send("Emulation.setScriptExecutionDisabled", {"value": True})
    page.goto(report.as_uri(), wait_until="load")
    assert page.locator("table.grid").count() == 0  # the grids need the script
    figures = page.locator('section#lora-style .inputs figure.fig[data-provider="input"]')
    assert figures.count() == len(INPUTS) and figures.first.is_visible()
    assert sorted(figures.evaluate_all("els => els.map(e => e.querySelector('button.pick').dataset.sha)")) == sorted(
        shas.values())
    page.close()


def test_an_inpaint_grid_shows_the_mask_beside_its_input(browser, tmp_path):
    """Inpaint: each row head shows the mask (white repaints) beside the input, both the run's
    kept copies (data-sha = the sha256 run.db recorded), linked full size."""
    from tests.modes.test_modes_fidelity import test_an_inpaint_is_measured_outside_its_mask_too as inpaint_run

    mp = pytest.MonkeyPatch()
    try:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: asyncio.run(inpaint_run(tmp_path, mp))).result()
        report = write_run_report(tmp_path / "run")
    finally:
        mp.undo()
    run = tmp_path / "run"
    with sqlite3.connect(run / "run.db") as conn:
        (mask_sha, mask_rel), = conn.execute("SELECT mask_sha256, mask_path FROM run_masks").fetchall()
        (input_sha,), = conn.execute("SELECT input_sha256 FROM run_inputs").fetchall()
    page, log = open_page(browser, report.as_uri())
    grid = '[data-grid="lora-paint"]'
    heads = page.locator(f"{grid} tbody tr th.rowhead")
    assert heads.count() == 2  # rows = strength 0.5, 1
    for i in range(heads.count()):
        head = heads.nth(i)
        assert head.locator("figure.input-fig:not(.mask-fig)").get_attribute("data-sha") == input_sha
        mask = head.locator("figure.mask-fig")
        assert mask.get_attribute("data-sha") == mask_sha and "white repaints" in mask.inner_text()
        assert (run / mask.locator("a.thumb").get_attribute("href")).resolve() == (run / mask_rel).resolve()
    images = load_all_images(page)
    assert [i["src"] for i in images if i["w"] == 0] == []
    assert log.problems() == []
