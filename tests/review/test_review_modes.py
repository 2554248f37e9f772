"""Human review of image-conditioned runs compares like with like: a pair is two scales made
from the same input picture at the same denoising strength (with that strength's and that
input's no-LoRA baseline), the page says the strength and shows the input, the votes are
fitted per strength, and `recommend --objective human` names the strength it read the votes
at. Text-to-image slot keys are unchanged, so votes stored before keep matching.

The run: the blend provider of tests/modes (img2img as a mix of the input and seeded noise by
`strength`, a faint tint per LoRA scale), one LoRA at two scales, two strengths, two inputs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lorascope.evals.ratings import (
    build_slots,
    fit_all,
    human_recommendations,
    slot_digest,
)
from lorascope.harness.ratings import Ratings, Vote
from lorascope.harness.store import RunStore
from review_helpers import rows, start_server
from tests.helpers.harness_fakes import CATALOGUE

STRENGTHS = (0.3, 0.7)


def _picture(seed: int) -> bytes:
    """A structured 64x64 picture (gradients and blocks), different per seed."""
    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([(x * 4 + seed * 40) % 256, y * 4, ((x // 16 + y // 16 + seed) % 2) * 255], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def i2i_master(tmp_path_factory) -> Path:
    """2 inputs x 2 strengths x (baseline + scales 0.5, 1.0), one prompt, one seed: 12 images."""
    import lorascope.harness.providers as providers
    from lorascope.harness.runner import run_suite_async
    from lorascope.harness.suite import load_suite

    root = tmp_path_factory.mktemp("i2i-review")
    mp = pytest.MonkeyPatch()
    try:
        targets = {**providers._targets(), "blend": "tests.modes.test_modes_fidelity:BlendProvider"}
        mp.setattr(providers, "_targets", lambda: targets)
        mp.setenv("LORASCOPE_CACHE", str(root / "cache"))
        (root / "in").mkdir()
        (root / "in" / "harbour.png").write_bytes(_picture(1))
        (root / "in" / "street.png").write_bytes(_picture(2))
        (root / "loras.yaml").write_text(CATALOGUE)
        (root / "suite.yaml").write_text(
            "name: i2i-review\nmode: img2img\nproviders: [blend]\nloras: [paint]\nscales: [0.5, 1.0]\n"
            f"strengths: [{', '.join(map(str, STRENGTHS))}]\n"
            "images: [{id: harbour, image: in/harbour.png}, {id: street, image: in/street.png}]\n"
            "prompts: [a harbour at dusk]\nseeds: [1]\nsize: 64x64\n")
        summary = asyncio.run(run_suite_async(load_suite(root / "suite.yaml"), root / "run", progress=False,
                                              handle_sigint=False))
        assert summary.exit_code == 0, summary
    finally:
        mp.undo()
    return root / "run"


@pytest.fixture
def i2i_run(i2i_master: Path, tmp_path: Path) -> Path:
    from lorascope.evals.session import copy_run

    return copy_run(i2i_master, tmp_path / "run")


def _frame(run: Path):
    with RunStore.open(run) as store:
        return store.results_frame()


def _by_sha(run: Path) -> dict[str, dict]:
    frame = _frame(run)
    return {r["image_sha256"]: r for r in frame.to_dict("records")}


def test_a_text_to_image_slot_key_is_unchanged():
    # the key votes stored for text-to-image runs were made with: the six fields, hashed as before
    assert slot_digest("fal", "paint", "cat", 1, "{}", 0) == "6a1d11d00d749f6c9792"
    old = hashlib.sha256(json.dumps(("fal", "paint", "cat", 1, "{}", 0)).encode()).hexdigest()[:20]
    assert slot_digest("fal", "paint", "cat", 1, "{}", 0) == old
    # strength or input make another key
    assert slot_digest("fal", "paint", "cat", 1, "{}", 0, 0.3, "harbour") != old
    assert slot_digest("fal", "paint", "cat", 1, "{}", 0, 0.3, "harbour") != slot_digest(
        "fal", "paint", "cat", 1, "{}", 0, 0.7, "harbour")


def test_text_to_image_run_slots_keep_their_keys(review_run):
    frame = _frame(review_run)
    slots = build_slots(frame)
    assert slots and all(s.strength is None and s.input_id is None for s in slots)
    for s in slots:
        old = hashlib.sha256(json.dumps((s.provider, s.lora, s.prompt_id, s.seed, s.options, s.image_index),
                                        default=str).encode()).hexdigest()[:20]
        assert s.key == old


def test_slots_never_mix_strengths_or_inputs(i2i_run):
    frame = _frame(i2i_run)
    assert set(frame.strength) == set(STRENGTHS) and set(frame.init_image) == {"harbour", "street"}
    slots = build_slots(frame)
    assert sorted((s.strength, s.input_id) for s in slots) == [
        (0.3, "harbour"), (0.3, "street"), (0.7, "harbour"), (0.7, "street")]
    rows_by_cell = {r["cell_id"]: r for r in frame.to_dict("records")}
    for s in slots:
        assert set(s.images) == {"", "0.5", "1"}  # the baseline and both scales, none overwritten
        for ref in s.images.values():
            row = rows_by_cell[ref.cell_id]
            assert (row["strength"], row["init_image"]) == (s.strength, s.input_id)
        assert len(s.pairs()) == 3
    assert len({s.key for s in slots}) == 4


def _vote(vote_id: str, rater: str, slot, a: str, b: str, choice: str) -> Vote:
    left, right = slot.images[a], slot.images[b]
    return Vote(vote_id=vote_id, rater=rater, created_at=1.0, provider=slot.provider, lora=slot.lora,
                prompt_id=slot.prompt_id, seed=slot.seed, options=slot.options, left_cell=left.cell_id,
                left_index=left.index, left_sha256=left.sha256, left_scale=a, left_generation=left.generation_id,
                right_cell=right.cell_id, right_index=right.index, right_sha256=right.sha256, right_scale=b,
                right_generation=right.generation_id, choice=choice)


def _votes_preferring(slots, prefer: dict[float, str], rounds: int = 3) -> list[Vote]:
    """Votes by a person who, at each strength, prefers the scale `prefer[strength]` to the others."""
    out = []
    for r in range(rounds):
        for s in slots:
            best = prefer[s.strength]
            for a, b in s.pairs():
                if best in (a, b):
                    choice = "left" if a == best else "right"
                else:
                    choice = "tie"
                out.append(_vote(f"v{len(out)}", "ann", s, a, b, choice))
    return out


def test_fits_are_per_strength_and_pool_inputs(i2i_run):
    slots = build_slots(_frame(i2i_run))
    votes = _votes_preferring(slots, {0.3: "1", 0.7: "0.5"})
    fits = fit_all(votes, slots, resamples=50)
    assert [(f.lora, f.provider, f.strength) for f in fits] == [("paint", "blend", 0.3), ("paint", "blend", 0.7)]
    low, high = fits
    assert low.preferred_scale == 1.0 and high.preferred_scale == 0.5  # pooled, the two would blur
    # each strength's fit holds its own votes only, from both inputs (9 decided + 3 ties per input)
    for fit in fits:
        assert (fit.decided, fit.ties) == (12, 6)
        assert {s.scale for s in fit.strengths} == {"", "0.5", "1"}
    assert fits[0].as_dict()["strength"] == 0.3
    # a vote that paired two strengths (cast before slots knew them) answers no one-strength question
    at = {s.strength: s for s in slots if s.input_id == "harbour"}
    mixed = _vote("mixed", "ann", at[0.3], "", "1", "right")
    mixed = mixed.model_copy(update={"right_cell": at[0.7].images["1"].cell_id,
                                     "right_sha256": at[0.7].images["1"].sha256})
    again = fit_all([*votes, mixed], slots, resamples=50)
    assert [(f.decided, f.ties) for f in again] == [(12, 6), (12, 6)]


def test_human_recommendation_reads_the_pair_rules_strength_else_the_lowest_voted(i2i_run):
    slots = build_slots(_frame(i2i_run))
    fits = fit_all(_votes_preferring(slots, {0.3: "1", 0.7: "0.5"}), slots, resamples=50)
    (rec,) = human_recommendations(fits, {}, pair_strengths={("paint", "blend"): 0.7})
    assert (rec.scale, rec.strength) == (0.5, 0.7)
    assert rec.reason.startswith("at strength 0.7, the pair rule's choice on the scores")
    assert "votes compare scales at one strength" in rec.reason
    assert [p.scale for p in rec.points] == [0.5, 1.0] and all(p.images == 12 for p in rec.points)
    (rec,) = human_recommendations(fits, {}, pair_strengths={})
    assert (rec.scale, rec.strength) == (1.0, 0.3)
    assert "the lowest strength with votes (the pair rule chose no strength" in rec.reason
    (rec,) = human_recommendations(fits[1:], {}, pair_strengths={("paint", "blend"): 0.3})
    assert (rec.scale, rec.strength) == (0.5, 0.7)
    assert "the pair rule's strength 0.3 has no votes" in rec.reason


def _hand_scores(run: Path) -> None:
    """Scores the pair rule decides on: prompt kept everywhere; style 0.01/0.02 (scales 0.5/1)
    at strength 0.3 and 0.05/0.06 at 0.7, so it picks strength 0.7 (scale 1 there)."""
    from lorascope.evals.results import write_scores

    style = {(0.3, 0.5): 0.01, (0.3, 1.0): 0.02, (0.7, 0.5): 0.05, (0.7, 1.0): 0.06}
    frame = _frame(run)
    rows = []
    for r in frame.to_dict("records"):
        shift = style.get((r["strength"], r["scale"]), 0.0) if r["lora"] else 0.0
        rows.append((r["cell_id"], int(r["image_index"]), r["image_sha256"], 0.5, None, None, shift, shift, None))
    conn = sqlite3.connect(run / "run.db")
    try:
        write_scores(conn, "hand", "hand-made", rows)
    finally:
        conn.close()


def _recommend_human(run: Path) -> tuple[dict, str]:
    from lorascope.cli import app

    result = CliRunner().invoke(app, ["recommend", str(run), "--objective", "human"], catch_exceptions=False,
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    (rec,) = json.loads((run / "recommend.json").read_text())["recommendations"]
    return rec, result.output


def test_recommend_objective_human_reads_the_votes_at_the_pair_rules_strength(i2i_run):
    from lorascope.evals.fidelity import fidelity_columns
    from lorascope.evals.recommend_pairs import recommend_pairs
    from lorascope.evals.results import scored_frame

    slots = build_slots(_frame(i2i_run))
    with Ratings.open(i2i_run) as ratings:
        for v in _votes_preferring(slots, {0.3: "1", 0.7: "0.5"}, rounds=1):
            assert ratings.add_vote(v)
    # not scored yet: no pair rule, so the lowest strength with votes, and it says so
    rec, output = _recommend_human(i2i_run)
    assert (rec["strength"], rec["scale"], rec["basis"]) == (0.3, 1.0, "human")
    assert rec["reason"].startswith("at strength 0.3, the lowest strength with votes (the pair rule chose no strength")
    assert "at strength 0.3" in output
    _hand_scores(i2i_run)
    with RunStore.open(i2i_run) as store:
        entries = store.lora_entries()
    (pair,) = recommend_pairs(fidelity_columns(scored_frame(i2i_run), i2i_run), entries)
    assert pair.strength == 0.7  # the scores' choice of strength ...
    rec, output = _recommend_human(i2i_run)
    # ... and the scale people preferred at that strength (scale 1 won at 0.3, which is not asked)
    assert (rec["strength"], rec["scale"]) == (0.7, 0.5)
    assert rec["reason"].startswith("at strength 0.7, the pair rule's choice on the scores (votes compare scales")
    assert [p["images"] for p in rec["points"]] == [4, 4]  # 0.7's votes only: 2 inputs x 2 pairs per scale
    assert "at strength 0.7" in output


def test_served_pairs_never_mix_strengths_or_inputs_and_show_the_input(i2i_run):
    photos = {"harbour": _picture(1), "street": _picture(2)}
    by_sha = _by_sha(i2i_run)
    server = start_server(i2i_run, rater="ann")
    seen = []
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            while True:
                body = client.get("/api/next", params={"rater": "ann"}).json()
                pair = body["pair"]
                if pair is None:
                    break
                left, right = by_sha[pair["left"]["sha"]], by_sha[pair["right"]["sha"]]
                assert left["strength"] == right["strength"] == pair["strength"]
                assert left["init_image"] == right["init_image"] == pair["input"]["id"]
                # the input shown is the run's copy of the picture both were made from
                shown = client.get(pair["input"]["url"])
                assert shown.status_code == 200 and shown.content == photos[pair["input"]["id"]]
                assert pair["input"]["sha"] == hashlib.sha256(photos[pair["input"]["id"]]).hexdigest()
                high = "left" if (left["scale"] or 0) > (right["scale"] or 0) else "right"
                ack = client.post("/api/vote", json={"vote_id": f"v{len(seen)}", "rater": "ann", "slot": pair["slot"],
                                                     "left": left["image_sha256"], "right": right["image_sha256"],
                                                     "choice": high})
                assert ack.status_code == 200 and ack.json()["stored"]
                seen.append((pair["strength"], pair["input"]["id"], pair["key"]))
                assert len(seen) <= 12
            # images only by hash: a path to the input is refused as before
            assert client.get("/img/../in/harbour.png").status_code == 404
    finally:
        server.stop()
    assert len(seen) == 12 and len({k for *_, k in seen}) == 12  # every pair once: 4 slots x 3 pairs
    assert sorted({(s, i) for s, i, _ in seen}) == [(0.3, "harbour"), (0.3, "street"), (0.7, "harbour"),
                                                     (0.7, "street")]
    stored = rows(i2i_run, "SELECT left_cell, right_cell FROM ratings")
    cells = {r["cell_id"]: r for r in _frame(i2i_run).to_dict("records")}
    assert len(stored) == 12
    for a, b in stored:
        assert (cells[a]["strength"], cells[a]["init_image"]) == (cells[b]["strength"], cells[b]["init_image"])


def test_text_to_image_pairs_have_no_input(review_run):
    server = start_server(review_run, rater="ann")
    try:
        pair = httpx.get(f"{server.base}/api/next", params={"rater": "ann"}, timeout=30).json()["pair"]
    finally:
        server.stop()
    assert pair["strength"] is None and pair["input"] is None


def test_the_report_has_one_table_and_plot_per_strength(i2i_run):
    from lorascope.reports.service import write_run_report

    slots = build_slots(_frame(i2i_run))
    with Ratings.open(i2i_run) as ratings:
        for v in _votes_preferring(slots, {0.3: "1", 0.7: "0.5"}, rounds=1):
            assert ratings.add_vote(v)
    html = write_run_report(i2i_run).read_text()
    for strength in ("0.3", "0.7"):
        assert f"Human votes · blend · strength {strength} " in html
        assert f'aria-label="Human votes at strength {strength}: strength vs scale' in html
    assert "Human votes · blend <" not in html  # never a pooled table


def test_the_page_shows_the_strength_and_input_and_a_vote_stores(i2i_run):
    from tests.reports.report_browser import browser_context, open_page, screenshot

    server = start_server(i2i_run, rater="ann")
    try:
        with browser_context() as context:
            page, log = open_page(context, server.url)
            page.wait_for_selector("main[data-ready='1']", timeout=60_000)
            page.wait_for_function("() => ['left-img','right-img','input-img'].every(id => {"
                                   " const i = document.getElementById(id); return i.complete && i.naturalWidth > 0; })",
                                   timeout=30_000)
            assert page.is_visible("#input") and page.is_visible("#question")
            caption = page.text_content("#input-caption")
            context_text = page.text_content("#context")
            assert any(f"strength {s:g}" in context_text and f"strength {s:g}" in caption for s in STRENGTHS)
            assert "scale" not in context_text  # scales stay hidden until the vote
            shown_input = page.evaluate("() => document.getElementById('review').dataset.input")
            page.keyboard.press("1")
            page.wait_for_function("() => window.lorascopeReview.acked.length >= 1"
                                   " && document.getElementById('review').dataset.busy === ''", timeout=60_000)
            screenshot(page, "review-img2img.png")
            assert not log.console_errors and not log.page_errors
    finally:
        server.stop()
    (stored,) = rows(i2i_run, "SELECT left_cell, right_cell, choice FROM ratings")
    cells = {r["cell_id"]: r for r in _frame(i2i_run).to_dict("records")}
    left, right = cells[stored[0]], cells[stored[1]]
    assert stored[2] == "left" and left["strength"] == right["strength"]
    assert left["init_image"] == right["init_image"]
    assert shown_input == hashlib.sha256(_picture(1 if left["init_image"] == "harbour" else 2)).hexdigest()


def _lose_the_suite_files(run: Path, tmp_path: Path) -> None:
    """Point the run's stored suite at a folder that no longer exists (the original inputs gone)."""
    with RunStore.open(run) as store:
        store.set_meta({"suite_path": str(tmp_path / "gone" / "suite.yaml")})


def _first_pair(run: Path) -> tuple[dict, str]:
    server = start_server(run, rater="ann")
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            pair = client.get("/api/next", params={"rater": "ann"}).json()["pair"]
            shown = client.get(pair["input"]["url"]).content if pair["input"]["url"] else None
    finally:
        server.stop()
    return {**pair, "shown": shown}, server.proc.stdout.read()


def test_the_input_shown_is_the_copy_the_run_kept(i2i_run, tmp_path):
    from lorascope.cli import app
    from lorascope.evals.session import copy_run

    unscored = copy_run(i2i_run, tmp_path / "unscored")
    result = CliRunner().invoke(app, ["score", str(i2i_run), "--clip", "tiny-random"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _lose_the_suite_files(i2i_run, tmp_path)
    _lose_the_suite_files(unscored, tmp_path)
    # scored: `score` kept the inputs in the run, so the page still shows them
    pair, output = _first_pair(i2i_run)
    assert pair["shown"] == _picture(1 if pair["input"]["id"] == "harbour" else 2)
    assert "note:" not in output
    # never scored and the files gone: no input to show, and the server says why (once per input)
    pair, output = _first_pair(unscored)
    assert pair["input"]["url"] is None and pair["input"]["sha"] is None and pair["strength"] in STRENGTHS
    for input_id in ("harbour", "street"):
        assert f"note: input picture '{input_id}': the run keeps no usable copy of it" in output
        assert f"gone/in/{input_id}.png not found" in output  # the suite's file:line, as `score` says it


def test_ratings_cli_prints_one_table_per_strength(i2i_run):
    from lorascope.cli import app

    slots = build_slots(_frame(i2i_run))
    with Ratings.open(i2i_run) as ratings:
        for v in _votes_preferring(slots, {0.3: "1", 0.7: "0.5"}, rounds=1):
            assert ratings.add_vote(v)
    result = CliRunner().invoke(app, ["ratings", str(i2i_run), "--resamples", "50"], catch_exceptions=False,
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "paint · blend · strength 0.3: 4 decided" in result.output
    assert "paint · blend · strength 0.7: 4 decided" in result.output
    fits = json.loads((i2i_run / "ratings.json").read_text())["fits"]
    assert [(f["strength"], f["preferred_scale"]) for f in fits] == [(0.3, 1.0), (0.7, 0.5)]
