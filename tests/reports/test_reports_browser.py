"""The reports in a real browser: Debian's Chromium driven by Playwright.

What a reader would notice: an image that does not load, a console error, a grid with the
wrong shape, a thumbnail that does not open the full image, script injected through a
prompt, a catalogue note or a provider message. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import pytest
from report_browser import browser_context, load_all_images, open_page, screenshot
from report_fixtures import LORAS, PROMPTS, PROVIDERS, SCALES, SEEDS, XSS_ERROR, XSS_NOTE, XSS_PROMPT

from lorascope.reports.service import write_run_data_report


@pytest.fixture(scope="module")
def browser():
    with browser_context() as context:
        yield context


def test_run_report_loads_every_image_and_has_the_expected_grid(browser, scored_run):
    report = write_run_data_report(scored_run)
    page, log = open_page(browser, report.as_uri())
    images = load_all_images(page)
    assert images and [i["src"] for i in images if i["w"] == 0] == []

    for lora in LORAS:  # the default view: one provider, rows prompt x seed, baseline then scales
        grid = page.locator(f'table.grid[data-lora="{lora}"]')
        headers = grid.locator("thead th")
        assert headers.count() == 2 + len(SCALES)  # row header, baseline, each scale
        assert headers.nth(1).inner_text().startswith("no LoRA")
        rows = grid.locator("tbody tr")
        assert rows.count() == len(PROMPTS) * len(SEEDS)
        for r in range(rows.count()):
            cells = rows.nth(r).locator("td")
            assert cells.count() == 1 + len(SCALES)
            for c in range(cells.count()):
                assert cells.nth(c).locator("figure.fig").count() == 1
        assert grid.locator(f'figure.fig:not([data-provider="{PROVIDERS[0]}"])').count() == 0
    # the failed cell shows its reason in place of an image
    failed = page.locator('table.grid[data-lora="ink-wash"] figure[data-status="failed"]')
    assert failed.count() == 1 and "HTTP 500" in failed.inner_text()
    assert page.locator("svg path.band").count() == len(LORAS) * 2 * len(PROVIDERS)
    assert page.locator("#problems tbody tr").count() == 2
    assert log.problems() == []
    page.set_viewport_size({"width": 1400, "height": 1700})
    screenshot(page, "report-run.png")


def test_clicking_a_thumbnail_opens_the_full_size_image(browser, scored_run):
    report = write_run_data_report(scored_run)
    page, log = open_page(browser, report.as_uri())
    thumb = page.locator('table.grid[data-lora="pixel-art"] a.thumb').nth(3)
    href = thumb.get_attribute("href")
    thumb.scroll_into_view_if_needed()
    thumb.click()
    viewer = page.locator("dialog#viewer")
    viewer.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#viewer img').complete")
    full = page.evaluate("() => { const i = document.querySelector('#viewer img');"
                         " return {src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight}; }")
    assert full == {"src": href, "w": 96, "h": 96}  # the full-size PNG, not the 256 px-max thumbnail
    screenshot(page, "report-viewer.png")
    page.keyboard.press("Escape")
    viewer.wait_for(state="hidden")
    assert log.problems() == []


def test_unscored_report_renders_without_errors(browser, unscored_run):
    page, log = open_page(browser, write_run_data_report(unscored_run).as_uri())
    images = load_all_images(page)
    assert images and all(i["w"] > 0 for i in images)
    assert "not scored yet" in page.locator("#not-scored").inner_text()
    assert page.locator("svg").count() == 0
    assert page.locator("#providers tbody tr").count() == len(PROVIDERS)
    assert log.problems() == []


def test_untrusted_text_shows_as_text_and_runs_no_script(browser, hostile_run):
    page, log = open_page(browser, write_run_data_report(hostile_run).as_uri())
    load_all_images(page)
    page.wait_for_timeout(200)
    assert log.dialogs == [] and log.console_errors == [] and log.page_errors == []
    assert log.problems() == []
    text = page.locator("body").inner_text()
    assert XSS_PROMPT in text  # shown literally, as the user wrote it
    assert XSS_NOTE in text
    assert XSS_ERROR in text
    assert page.locator("script:not([type='application/json'])").count() == 1
    assert page.evaluate("() => document.querySelectorAll('[onerror],[onload]').length") == 0
    # the full-size viewer puts the hostile prompt into the page from a data attribute: as text
    thumb = page.locator('tr[data-prompt="trex"] a.thumb').first
    thumb.scroll_into_view_if_needed()
    thumb.click()
    page.locator("dialog#viewer").wait_for(state="visible")
    assert XSS_PROMPT in page.locator("dialog#viewer p").inner_text()
    assert page.evaluate("() => document.querySelectorAll('#viewer *').length") == 2  # its img and p only
    page.wait_for_timeout(200)
    assert log.dialogs == [] and log.problems() == []
    page.keyboard.press("Escape")
    screenshot(page, "report-escaping.png")


def test_report_served_over_http_loads_every_image(browser, scored_run):
    """Teams share a run folder through a web server: the CSP's 'self' must cover it."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    write_run_data_report(scored_run)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(scored_run.run_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page, log = open_page(browser, f"http://127.0.0.1:{server.server_port}/report.html")
        images = load_all_images(page)
        assert images and [i["src"] for i in images if i["w"] == 0] == []
        assert log.problems() == []
    finally:
        server.shutdown()
        server.server_close()
