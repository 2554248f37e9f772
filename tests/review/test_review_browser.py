"""The review page in Debian's Chromium (Playwright): voting with the keyboard and the mouse,
a reload, a server restart mid-session, and every acknowledged vote found in run.db; two
raters kept apart; a hostile prompt shown as text."""

from __future__ import annotations

import signal

from review_helpers import rows, start_server
from tests.reports.report_browser import browser_context, open_page, screenshot

KEYS = {"1": "left", "ArrowLeft": "left", "2": "right", "ArrowRight": "right", "0": "tie", "ArrowDown": "tie",
        "s": "skip"}


def wait_acked(page, n: int) -> None:
    page.wait_for_function(
        f"() => window.lorascopeReview && window.lorascopeReview.acked.length >= {n}"
        " && document.getElementById('review').dataset.busy === ''", timeout=60_000)


def acked(page) -> list[str]:
    return page.evaluate("() => window.lorascopeReview.acked.slice()")


def current_key(page) -> str:
    return page.evaluate("() => document.getElementById('review').dataset.pair")


def images_loaded(page) -> bool:
    page.wait_for_function("() => ['left-img','right-img'].every(id => { const i = document.getElementById(id);"
                           " return i.complete && i.naturalWidth > 0; })", timeout=30_000)
    return True


def test_vote_by_keyboard_and_mouse_reload_restart_two_raters(review_run):
    server = start_server(review_run, rater="ann")
    expected: dict[str, str] = {}  # vote id -> choice, for every vote the page saw acknowledged
    try:
        with browser_context() as context:
            page, log = open_page(context, server.url)
            page.wait_for_selector("main[data-ready='1']", timeout=60_000)
            assert images_loaded(page)
            context_text = page.text_content("#context")
            assert "scale" not in context_text and "no LoRA" not in context_text  # hidden until the vote
            n = 0
            for key, choice in KEYS.items():
                before = current_key(page)
                page.keyboard.press(key)
                n += 1
                wait_acked(page, n)
                expected[acked(page)[-1]] = choice
                assert current_key(page) != before
                assert "left was" in page.text_content("#reveal")
            for selector, choice in (("#left", "left"), ("#right", "right"), ("#vote-tie", "tie"),
                                     ("#vote-skip", "skip"), ("#vote-left", "left")):
                page.click(selector)
                n += 1
                wait_acked(page, n)
                expected[acked(page)[-1]] = choice
            assert images_loaded(page)
            progress = page.locator("#progress li")
            assert progress.count() == 2
            assert sum(int(progress.nth(i).get_attribute("data-votes")) for i in range(2)) == n
            screenshot(page, "review-page.png")
            assert log.problems() == []

            page.reload()
            page.wait_for_selector("main[data-ready='1']", timeout=60_000)
            assert sum(int(page.locator("#progress li").nth(i).get_attribute("data-votes")) for i in range(2)) == n
            for i, key in enumerate(("2", "1"), 1):
                page.keyboard.press(key)
                wait_acked(page, i)
            ids = acked(page)
            expected[ids[0]], expected[ids[1]] = "right", "left"

            # the server dies; a vote cast meanwhile is retried until the new server takes it
            server.stop(signal.SIGKILL)
            page.keyboard.press("0")
            page.wait_for_function("() => document.getElementById('status').textContent.includes('retrying')",
                                   timeout=30_000)
            server = start_server(review_run, port=server.port, rater="ann")
            wait_acked(page, 3)
            expected[acked(page)[-1]] = "tie"
            page.keyboard.press("ArrowRight")
            wait_acked(page, 4)
            expected[acked(page)[-1]] = "right"

            bob, bob_log = open_page(context, server.base + "/?rater=bob")
            bob.wait_for_selector("main[data-ready='1']", timeout=60_000)
            assert sum(int(bob.locator("#progress li").nth(i).get_attribute("data-votes")) for i in range(2)) == 0
            bob.keyboard.press("1")
            wait_acked(bob, 1)
            bob.click("#right")
            wait_acked(bob, 2)
            bob_ids = acked(bob)
            assert bob_log.problems() == []
    finally:
        server.stop()

    stored = {vid: (rater, choice) for vid, rater, choice in rows(review_run, "SELECT vote_id, rater, choice FROM ratings")}
    assert {vid: stored.get(vid) for vid in expected} == {vid: ("ann", c) for vid, c in expected.items()}
    assert {stored[v] for v in bob_ids} == {("bob", "left"), ("bob", "right")}
    assert len(stored) == len(expected) + 2  # nothing stored that was not acknowledged
    judged = rows(review_run, "SELECT rater, left_sha256, right_sha256 FROM ratings WHERE rater = 'ann'")
    assert len({(min(a, b), max(a, b)) for _, a, b in judged}) == len(judged)  # no pair shown to ann twice


def test_a_hostile_prompt_is_shown_as_text(review_run):
    server = start_server(review_run, rater='<img src=x onerror=alert(1)>')
    try:
        with browser_context() as context:
            page, log = open_page(context, server.url)
            page.wait_for_selector("main[data-ready='1']", timeout=60_000)
            assert page.text_content("#rater") == '<img src=x onerror=alert(1)>'
            for _ in range(8):  # walk through pairs until the hostile prompt is on screen
                if "<script>" in page.text_content("#context"):
                    break
                count = len(acked(page))
                page.keyboard.press("s")
                wait_acked(page, count + 1)
            assert 'a dog <script>alert("dog")</script> in fog' in page.text_content("#context")
            assert page.locator("main script, main img[src='x']").count() == 0
            assert log.dialogs == [] and log.problems() == []
    finally:
        server.stop()
