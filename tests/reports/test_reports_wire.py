"""Untrusted text that really travels: a hostile prompt in the suite, a hostile catalogue
name and note, and a hostile error message sent by a provider over fal's queue protocol
(loopback fake), through the harness store to `lorascope report` and into Chromium.
The fake also flags every image NSFW, so the report must list and blur them."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from report_browser import browser_context, load_all_images, open_page, screenshot
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.fal import FalFake  # noqa: E402
from tests.fakes.server import Reply  # noqa: E402

PROMPT = 'A <script>alert("prompt")</script> beach "><img src=x onerror=alert(1)>'
NOTE = '</div><script>alert("note")</script><img src=x onerror="alert(2)">'
PROVIDER_MESSAGE = '"><svg onload=alert(3)><script>alert("error")</script>'

CATALOGUE = f"""\
version: 1
loras:
  - id: hostile
    name: Hostile <b>name</b>
    source: {{repo: someone/hostile-lora, file: hostile.safetensors, revision: {"0123456789abcdef" * 2 + "01234567"}}}
    kind: style
    triggers: [h0stile]
    scale: {{recommended: 0.8, range: [0.5, 1.0]}}
    style_prompt: a painting
    notes: '{NOTE}'
"""
SUITE = f"""\
name: wire-hostile
catalogue: loras.yaml
providers: [fal]
loras: [hostile]
scales: [0.5, 1.0]
prompts:
  - id: trex
    text: '{PROMPT}'
seeds: [1, 2]
size: 512x512
steps: 8
"""


@pytest.fixture(scope="module")
def hostile_wire_run(tmp_path_factory):
    from lorascope.harness.runner import run_suite
    from lorascope.harness.store import SharedCache
    from lorascope.harness.suite import load_suite

    root = tmp_path_factory.mktemp("wire")
    (root / "loras.yaml").write_text(CATALOGUE)
    (root / "suite.yaml").write_text(SUITE)
    mp = pytest.MonkeyPatch()
    try:
        with FalFake(key="test-key") as fal:
            mp.setenv("FAL_KEY", "test-key")
            mp.setenv("LORASCOPE_FAL_URL", fal.url)
            mp.setenv("LORASCOPE_CACHE", str(root / "cache"))
            fal.nsfw = True
            fal.script("submit", Reply(status=422, body={"detail": [
                {"loc": ["body", "prompt"], "msg": PROVIDER_MESSAGE, "type": "value_error"}]}))
            with ThreadPoolExecutor(1) as pool:  # asyncio.run in a thread of its own
                summary = pool.submit(run_suite, load_suite(root / "suite.yaml"), root / "run", progress=False,
                                      cache=SharedCache(root / "cache")).result()
            assert len(fal.hits("submit")) == 6 and summary.failed == 1
        result = CliRunner().invoke(__import__("lorascope.cli", fromlist=["app"]).app, ["report", str(root / "run")])
        assert result.exit_code == 0, result.output
        yield root / "run"
    finally:
        mp.undo()


def test_hostile_text_from_suite_catalogue_and_provider_is_shown_as_text(hostile_wire_run):
    with browser_context() as browser:
        page, log = open_page(browser, (hostile_wire_run / "report.html").as_uri())
        images = load_all_images(page)
        page.wait_for_timeout(200)
        assert log.problems() == []  # no dialog, no console error, nothing fetched from outside
        assert images and all(i["w"] > 0 for i in images)
        text = page.locator("body").inner_text()
        for literal in (PROMPT, NOTE, PROVIDER_MESSAGE, "Hostile <b>name</b>"):
            assert literal in text
        assert page.locator("script:not([type='application/json'])").count() == 1  # + the grid data block
        assert page.evaluate("() => document.querySelectorAll('[onerror],[onload],section.lora h2 b').length") == 0
        # the provider's refusal is the failed cell's reason; every returned image was flagged
        problems = page.locator("#problems tbody tr")
        kinds = [problems.nth(i).get_attribute("data-kind") for i in range(problems.count())]
        assert kinds == ["failed"] + ["nsfw"] * 5
        assert PROVIDER_MESSAGE in problems.first.inner_text()
        blurred = page.evaluate("() => Array.from(document.querySelectorAll('figure.nsfw img'))"
                                ".map(i => getComputedStyle(i).filter)")
        assert len(blurred) == 5 and all(f.startswith("blur(") for f in blurred)
        screenshot(page, "report-wire-hostile.png")
