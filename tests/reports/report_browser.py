"""Driving Debian's Chromium through Playwright for the report tests (no browser download).

`open_report` loads a report file and records what a reader's browser would complain
about: console errors, page errors, dialogs (an `alert` from injected script), failed
requests (an image that does not load) and requests that leave the machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("LORASCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def require_chromium() -> str:
    """The Chromium binary; without one: fail in CI, skip (with the reason) elsewhere."""
    found = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        found = None
        reason = "the playwright Python package is not installed (pip install -e '.[test]')"
    else:
        reason = f"no Chromium at {CHROMIUM} or on PATH (Debian: apt-get install chromium; or `make chromium`)"
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"browser tests need Chromium in CI: {reason}")
    pytest.skip(reason)


@dataclass
class PageLog:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [*(f"console error: {m}" for m in self.console_errors),
                *(f"page error: {m}" for m in self.page_errors),
                *(f"dialog: {m}" for m in self.dialogs),
                *(f"failed request: {m}" for m in self.failed_requests),
                *(f"external request: {m}" for m in self.external_requests)]


@contextmanager
def browser_context() -> Iterator[object]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="lorascope-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_page(context, url: str):
    """A new page at `url` with a `PageLog` attached (page, log)."""
    page = context.new_page()
    log = PageLog()
    page.on("console", lambda msg: log.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))

    def on_dialog(dialog):
        log.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("requestfailed", lambda req: log.failed_requests.append(f"{req.url} ({req.failure})"))

    def on_request(req):
        if not req.url.startswith(("file:", "data:", "about:", "http://127.0.0.1", "http://localhost")):
            log.external_requests.append(req.url)

    page.on("request", on_request)
    page.goto(url, wait_until="load")
    if page.locator("#grid-data").count():  # grids off the first screen are built after load
        page.wait_for_selector("body[data-ready-ms]", state="attached")
    return page, log


def load_all_images(page) -> list[dict]:
    """Force every lazy image to load (lazy loading is the point; the test must still see
    each one) and return each img's src and naturalWidth."""
    page.evaluate("""() => { for (const img of document.querySelectorAll('img[loading=lazy]')) img.loading = 'eager'; }""")
    page.evaluate("""async () => {
        const step = window.innerHeight;
        for (let y = 0; y < document.body.scrollHeight; y += step) { window.scrollTo(0, y); await new Promise(r => setTimeout(r, 0)); }
        window.scrollTo(0, 0);
    }""")
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('main img')).every(img => img.complete)""",
        timeout=30_000,
    )
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('main img')).map(img => ({src: img.getAttribute('src'), w: img.naturalWidth}))"""
    )


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=False)
    return path
