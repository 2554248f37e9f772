"""The report's grids in Chromium: the reader chooses the axes and the fixed values, and the
page must show exactly the matching generations (checked by content hash), keep the view
in the URL fragment, compare picked images, and move through the grid from the viewer."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from report_browser import browser_context, load_all_images, open_page, screenshot
from report_fixtures import LORAS, PROMPTS, PROVIDERS, SCALES, SEEDS, XSS_PROMPT, entry, png

from lorascope.reports.inputs import RunData
from lorascope.reports.service import write_run_data_report


@pytest.fixture(scope="module")
def browser():
    with browser_context() as context:
        yield context


@pytest.fixture(scope="module")
def report(scored_run):
    return write_run_data_report(scored_run)


def _expected(run: RunData, **where) -> set[str]:
    """Content hashes of the run's images where column == value (lists: any of them); the
    fixture's images are all distinct, so a hash names one generation."""
    frame = run.results[run.results.status == "ok"]
    for column, value in where.items():
        values = value if isinstance(value, (list, tuple, set)) else [value]
        frame = frame[frame[column].isin(values)]
    assert frame.image_sha256.is_unique
    return set(frame.image_sha256)


def _shown(page, anchor: str) -> list[str]:
    return page.eval_on_selector_all(f'[data-grid="{anchor}"] figure.fig[data-status="ok"]',
                                     "els => els.map(e => e.getAttribute('data-sha'))")


def _sha(run: RunData, **where) -> str:
    frame = run.results
    for column, value in where.items():
        frame = frame[frame[column] == value]
    return frame.image_sha256.item()


def test_switching_fixed_values_and_axes_shows_exactly_the_matching_images(browser, report, scored_run):
    page, log = open_page(browser, report.as_uri())
    ink = '[data-grid="lora-ink-wash"]'
    # default: fal only, every prompt x seed, baseline + each scale
    assert page.eval_on_selector_all("main img", "els => els.length > 0 && els.every(e => e.loading === 'lazy')")
    shown = _shown(page, "lora-ink-wash")
    assert len(shown) == len(set(shown)) and set(shown) == _expected(scored_run, provider="fal", lora=["", "ink-wash"])

    page.click(f'{ink} .value-pick[data-axis="provider"] button[data-value="novita"]')
    assert set(_shown(page, "lora-ink-wash")) == _expected(scored_run, provider="novita", lora=["", "ink-wash"])

    page.click(f'{ink} .value-pick[data-axis="provider"] button[data-value="*"]')  # providers side by side
    assert set(_shown(page, "lora-ink-wash")) == _expected(scored_run, lora=["", "ink-wash"])
    cell = page.locator(f'{ink} tbody tr').first.locator("td").nth(1)
    assert cell.locator("figure.fig").evaluate_all("els => els.map(e => e.dataset.provider)") == PROVIDERS

    # rows: provider, columns: scale; then pick one prompt and one seed
    page.select_option(f'{ink} select[data-role="rows"]', "provider")
    page.click(f'{ink} .value-pick[data-axis="prompt"] button[data-value="lighthouse"]')
    page.click(f'{ink} .value-pick[data-axis="seed"] button[data-value="1234"]')
    assert page.locator(f"{ink} table.grid").get_attribute("data-rows") == "provider"
    rows = page.locator(f"{ink} tbody tr")
    assert rows.evaluate_all("els => els.map(e => e.dataset.provider)") == PROVIDERS
    heads = page.locator(f"{ink} thead th").evaluate_all("els => els.slice(1).map(e => e.dataset.scale)")
    assert heads == ["baseline", *(f"{s:g}" for s in SCALES)]
    for r, provider in enumerate(PROVIDERS):
        cells = rows.nth(r).locator("td")
        for c, scale in enumerate([None, *SCALES]):
            where = dict(provider=provider, prompt_id="lighthouse", seed=1234, lora="ink-wash" if scale else "")
            if scale:
                where["scale"] = scale
            assert cells.nth(c).locator("figure.fig").get_attribute("data-sha") == _sha(scored_run, **where)

    # swap: scale on rows, provider on columns
    page.select_option(f'{ink} select[data-role="rows"]', "scale")
    assert page.locator(f"{ink} table.grid").get_attribute("data-cols") == "provider"
    assert set(_shown(page, "lora-ink-wash")) == _expected(
        scored_run, prompt_id="lighthouse", seed=1234, lora=["", "ink-wash"])
    assert log.problems() == []
    screenshot(page, "report-grid-switched.png")


def test_the_url_fragment_reopens_the_same_view(browser, report, scored_run):
    page, log = open_page(browser, report.as_uri())
    pix = '[data-grid="lora-pixel-art"]'
    page.select_option(f'{pix} select[data-role="columns"]', "provider")
    page.click(f'{pix} .value-pick[data-axis="scale"] button[data-value="0.8"]')
    before = sorted(_shown(page, "lora-pixel-art"))
    assert set(before) == _expected(scored_run, lora="pixel-art", scale=0.8)
    url = page.url
    assert "#" in url and "lora-pixel-art.cols=provider" in url
    untouched = sorted(_shown(page, "lora-ink-wash"))

    again, log2 = open_page(browser, url)
    assert sorted(_shown(again, "lora-pixel-art")) == before
    assert again.locator(f'{pix} select[data-role="columns"]').input_value() == "provider"
    assert again.locator(f'{pix} .value-pick[data-axis="scale"] button[aria-pressed="true"]').inner_text() == "0.8"
    assert sorted(_shown(again, "lora-ink-wash")) == untouched  # other grids keep their defaults
    # the section the reader last changed is scrolled into view
    assert again.evaluate("() => Math.abs(document.getElementById('lora-pixel-art').getBoundingClientRect().top) < 5")
    # a fragment naming values the run lacks falls back to the defaults instead of breaking
    bad, log3 = open_page(browser, report.as_uri() + "#lora-pixel-art.rows=nope&lora-pixel-art.provider=%3Cb%3E")
    assert set(_shown(bad, "lora-pixel-art")) == _expected(scored_run, provider="fal", lora=["", "pixel-art"])
    assert log.problems() == log2.problems() == log3.problems() == []


def test_compare_view_shows_picked_cells_side_by_side_then_slider_and_blink(browser, report, scored_run):
    page, log = open_page(browser, report.as_uri())
    figures = page.locator('[data-grid="lora-ink-wash"] tbody tr').first.locator('figure.fig[data-status="ok"]')
    first, second = figures.nth(0), figures.nth(2)
    shas = [first.get_attribute("data-sha"), second.get_attribute("data-sha")]
    first.locator("button.pick").click()
    second.locator("button.pick").click()
    assert page.locator("#compare-tray").inner_text().startswith("2 picked")
    page.click("#compare-tray button.open-compare")
    dialog = page.locator("dialog#compare")
    dialog.wait_for(state="visible")
    panels = dialog.locator(".cmp-side figure.cmp-panel")
    assert panels.evaluate_all("els => els.map(e => e.dataset.sha)") == shas
    page.wait_for_function("() => Array.from(document.querySelectorAll('#compare img')).every(i => i.complete && i.naturalWidth > 0)")
    text = dialog.inner_text()
    assert "CLIP" in text and "cost $" in text and "shift" in text  # scores, latency and cost
    dialog.locator('button.cmp-mode[data-mode="slider"]').click()
    assert dialog.locator(".cmp-stack img").count() == 2
    page.fill("#compare input.cmp-range", "20")
    assert "20%" in dialog.locator("img.cmp-b").evaluate("e => e.style.clipPath")
    screenshot(page, "report-compare-slider.png")
    dialog.locator('button.cmp-mode[data-mode="blink"]').click()
    showing = {dialog.locator(".cmp-showing").inner_text()}
    page.wait_for_timeout(800)
    showing.add(dialog.locator(".cmp-showing").inner_text())
    assert len(showing) == 2  # it alternates between the two
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert log.problems() == []


def test_arrows_move_through_the_grid_in_the_viewer_and_escape_closes(browser, report, scored_run):
    page, log = open_page(browser, report.as_uri())
    ink = page.locator('[data-grid="lora-ink-wash"] tbody tr')
    start = ink.nth(1).locator("td").nth(0).locator("a.thumb")
    right = ink.nth(1).locator("td").nth(1).locator("a.thumb").get_attribute("href")
    down = ink.nth(2).locator("td").nth(1).locator("a.thumb").get_attribute("href")
    start.click()
    viewer = page.locator("dialog#viewer")
    viewer.wait_for(state="visible")
    src = lambda: page.locator("#viewer img").get_attribute("src")  # noqa: E731
    assert src() == start.get_attribute("href")
    page.keyboard.press("ArrowRight")
    assert src() == right
    page.keyboard.press("ArrowDown")
    assert src() == down
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowUp")
    assert src() == start.get_attribute("href")
    page.keyboard.press("Escape")
    viewer.wait_for(state="hidden")
    assert log.problems() == []


def test_the_run_wide_grid_has_a_row_per_lora_with_the_shared_baseline(browser, report, scored_run):
    page, log = open_page(browser, report.as_uri())
    rows = page.locator('[data-grid="all-loras"] tbody tr')
    assert rows.evaluate_all("els => els.map(e => e.dataset.lora)") == LORAS
    base = _sha(scored_run, provider="fal", lora="", prompt_id="trex", seed=42)
    assert [rows.nth(i).locator("td").first.locator("figure").get_attribute("data-sha") for i in range(2)] == [base] * 2
    assert set(_shown(page, "all-loras")) == _expected(scored_run, provider="fal", prompt_id="trex", seed=42)
    assert log.problems() == []


def test_hostile_prompt_shows_as_text_in_every_layout(browser, hostile_run):
    page, log = open_page(browser, write_run_data_report(hostile_run).as_uri())
    ink = '[data-grid="lora-ink-wash"]'
    page.select_option(f'{ink} select[data-role="rows"]', "prompt")
    assert XSS_PROMPT in page.locator(f'{ink} tbody tr[data-prompt="trex"] th').inner_text()
    page.select_option(f'{ink} select[data-role="columns"]', "prompt")
    assert page.locator(f'{ink} thead th[data-prompt="trex"]').count() == 1
    page.wait_for_timeout(200)
    assert page.evaluate("() => document.querySelectorAll('[onerror],[onload],main script').length") == 0
    assert log.dialogs == [] and log.problems() == []


def _smoke_run(run_dir) -> RunData:
    """The shape of suites/styles-smoke.yaml: 4 providers x 2 LoRAs x (4 scales + baseline)
    x 2 prompts x 2 seeds = 144 images."""
    providers, loras, scales = ["fal", "novita", "highway", "aimlapi"], ["classic-painting", "coloring-book"], [
        0.5, 0.8, 1.0, 1.5]
    rows, n = [], 0
    for provider in providers:
        for pid, text in PROMPTS:
            for seed in SEEDS:
                for lora, scale in [("", math.nan)] + [(lo, s) for lo in loras for s in scales]:
                    n += 1
                    rel = f"images/{n:03d}.png"
                    sha = png(run_dir / rel, (n * 37 % 256, n * 11 % 256, 90), size=256)
                    rows.append({"provider": provider, "lora": lora, "scale": scale,
                                 "scales": f"{scale:g}" if lora else "", "prompt_id": pid, "prompt": text,
                                 "seed": seed, "status": "succeeded", "image_path": rel, "image_sha256": sha,
                                 "latency_s": 2.5, "cost_usd": 0.0085, "options": "{}", "nsfw": False})
    return RunData(run_dir=run_dir, results=pd.DataFrame(rows), suite_name="styles-smoke",
                   loras={lo: entry(lo) for lo in loras})


def test_a_styles_smoke_report_fits_a_1400px_window_by_default(browser, tmp_path):
    data = _smoke_run(tmp_path)
    assert len(data.results) == 144
    page, log = open_page(browser, write_run_data_report(data).as_uri())
    load_all_images(page)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1400
    overflow = page.eval_on_selector_all(".gridwrap", "els => els.map(e => e.scrollWidth - e.clientWidth)")
    assert len(overflow) == 3 and max(overflow) <= 0  # two LoRA grids and the run-wide one, no scrollbar
    # baseline first, then every scale, all on screen
    heads = page.locator('[data-grid="lora-classic-painting"] thead th').all_inner_texts()
    assert [h.splitlines()[0] for h in heads[1:]] == ["no LoRA (baseline)", "scale 0.5", "scale 0.8", "scale 1",
                                                      "scale 1.5"]
    assert log.problems() == []
    page.locator("#lora-classic-painting").scroll_into_view_if_needed()
    screenshot(page, "report-styles-smoke-1400.png")


def test_compare_report_opens_baseline_and_current_large_with_a_slider(browser, tmp_path):
    from report_fixtures import png as make_png

    from lorascope.reports.build_compare import build_compare_view
    from lorascope.reports.inputs import CompareCellData, CompareData, CompareMetricData, CompareSide
    from lorascope.reports.render import render, write_html

    base_dir, run_dir = tmp_path / "base", tmp_path / "run"
    base_sha = make_png(base_dir / "images" / "a.png", (10, 20, 30))
    run_sha = make_png(run_dir / "images" / "a.png", (200, 20, 30))
    cell = CompareCellData(
        provider="fal", lora="ink", scale="1", prompt_id="trex", prompt=XSS_PROMPT, seed="42", verdict="regressed",
        reasons=["SSIM 0.1 < 0.6"],
        metrics=[CompareMetricData(name="clip_score", baseline=0.71, current=0.52, delta=-0.19)],
        baseline=CompareSide(image=base_dir / "images" / "a.png", sha256=base_sha, status="succeeded",
                             latency_s=1.5, cost_usd=0.0085),
        current=CompareSide(image=run_dir / "images" / "a.png", sha256=run_sha, status="succeeded",
                            latency_s=2.5, cost_usd=0.0085))
    data = CompareData(baseline_dir=base_dir, run_dir=run_dir, overall="regressed", settings={}, cells=[cell])
    out = write_html(run_dir / "compare.html", render("compare.html.j2", build_compare_view(data)))
    page, log = open_page(browser, out.as_uri())
    page.click("button.pair-compare")
    dialog = page.locator("dialog#compare")
    dialog.wait_for(state="visible")
    assert dialog.locator("figure.cmp-panel").evaluate_all("els => els.map(e => e.dataset.sha)") == [base_sha, run_sha]
    text = dialog.inner_text()
    assert "CLIPScore 0.7100" in text and "CLIPScore 0.5200" in text and "latency 1.50 s" in text
    dialog.locator('button.cmp-mode[data-mode="slider"]').click()
    page.wait_for_function("() => Array.from(document.querySelectorAll('#compare .cmp-stack img')).every(i => i.complete && i.naturalWidth > 0)")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    # any images can be picked there too: current first, then baseline
    page.locator('figure[data-provider="current"] button.pick').click()
    page.locator('figure[data-provider="baseline"] button.pick').click()
    page.click("#compare-tray button.open-compare")
    dialog.wait_for(state="visible")
    assert dialog.locator("figure.cmp-panel").evaluate_all("els => els.map(e => e.dataset.sha)") == [run_sha, base_sha]
    assert "2.50 s" in dialog.inner_text() and "$0.00850" in dialog.inner_text()
    page.keyboard.press("Escape")
    assert log.problems() == []


def test_a_long_grid_builds_30_rows_at_a_time_and_the_viewer_moves_past_them(browser, tmp_path):
    seeds, prompts = range(1, 6), [(f"p{i}", f"prompt {i}") for i in range(8)]  # 40 rows
    rows, n = [], 0
    for pid, text in prompts:
        for seed in seeds:
            for lora, scale in (("", math.nan), ("ink", 0.5), ("ink", 1.0)):
                n += 1
                rel = f"images/{n:03d}.png"
                rows.append({"provider": "fal", "lora": lora, "scale": scale, "scales": f"{scale:g}" if lora else "",
                             "prompt_id": pid, "prompt": text, "seed": seed, "status": "succeeded",
                             "image_path": rel, "image_sha256": png(tmp_path / rel, (n * 2, 80, 160), size=32)})
    data = RunData(run_dir=tmp_path, results=pd.DataFrame(rows), suite_name="long", loras={"ink": entry("ink")})
    page, log = open_page(browser, write_run_data_report(data).as_uri())
    grid = '[data-grid="lora-ink"]'
    assert page.locator(f"{grid} tbody tr").count() == 30
    more = page.locator(f"{grid} button.more-rows")
    assert more.inner_text() == "Show 10 more rows (30 of 40 shown)"
    # the viewer walks the whole grid, not only the rows in the page
    page.locator(f"{grid} tbody tr").nth(29).locator("a.thumb").nth(1).click()
    page.keyboard.press("ArrowDown")
    frame = data.results
    row30 = frame[(frame.prompt_id == "p6") & (frame.seed == 1) & (frame.scale == 0.5)].image_path.item()
    assert page.locator("#viewer img").get_attribute("src") == row30
    page.keyboard.press("Escape")
    more.click()
    assert page.locator(f"{grid} tbody tr").count() == 40 and page.locator(f"{grid} button.more-rows").count() == 0
    assert set(_shown(page, "lora-ink")) == set(frame.image_sha256)
    assert log.problems() == []
