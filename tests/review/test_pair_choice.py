"""Which pair comes next: where a vote teaches most, never one the rater has judged, raters
apart; and a run with nothing to compare is refused with the reason."""

from __future__ import annotations

import asyncio
import random

from typer.testing import CliRunner

from lorascope.cli import app
from lorascope.evals.ratings import ImageRef, PairChooser, Slot, pair_key
from lorascope.harness.ratings import Vote

SCALES = ["", "0.5", "1"]


def slot(n: int) -> Slot:
    s = Slot(key=f"slot{n}", provider="fal", lora="paint", prompt_id=f"p{n}", prompt="x", seed=1, options="{}",
             image_index=0)
    for i, scale in enumerate(SCALES):
        sha = f"{n:02d}{i}".ljust(64, "0")
        s.images[scale] = ImageRef(f"c{n}-{scale}", 0, sha, f"images/{sha}.png", scale, None)
    return s


def vote(i: int, s: Slot, winner: str, loser: str, rater: str = "ann") -> Vote:
    w, lo = s.images[winner], s.images[loser]
    return Vote(vote_id=f"v{i}", rater=rater, created_at=float(i), provider="fal", lora="paint",
                prompt_id=s.prompt_id, seed=1, left_cell=w.cell_id, left_index=0, left_sha256=w.sha256,
                left_scale=winner, right_cell=lo.cell_id, right_index=0, right_sha256=lo.sha256, right_scale=loser,
                choice="left")


def test_the_next_pair_is_the_closest_in_strength_and_least_voted():
    slots = [slot(n) for n in range(6)]
    chooser = PairChooser(slots, rng=random.Random(1))
    # scale 1 beat the baseline 5 times, scale 0.5 beat it 5 times: (base, 1) and (base, 0.5)
    # are settled; (0.5, 1) has no vote and equal estimated strengths: it teaches most
    votes = [vote(i, slots[i], "1", "") for i in range(5)] + [vote(5 + i, slots[i], "0.5", "") for i in range(5)]
    pair = chooser.choose(votes, "bob")
    assert {pair.left.scale, pair.right.scale} == {"0.5", "1"}


def test_a_judged_pair_is_never_shown_again_and_raters_are_apart():
    slots = [slot(0)]
    chooser = PairChooser(slots, rng=random.Random(2))
    votes: list[Vote] = []
    shown = set()
    while (pair := chooser.choose(votes, "ann")) is not None:
        assert pair.key not in shown
        shown.add(pair.key)
        votes.append(vote(len(votes), pair.slot, pair.left.scale, pair.right.scale))
    assert len(shown) == 3  # every pair of the slot, once
    assert chooser.choose(votes, "bob") is not None  # bob has judged nothing
    assert [p["votes"] for p in chooser.progress(votes, "ann")] == [3]
    assert [p["votes"] for p in chooser.progress(votes, "bob")] == [0]
    first = chooser.choose([], "ann")
    other = chooser.choose([], "ann", exclude=[first.key])
    assert other.key != first.key  # the prefetch never repeats the pair on screen


def test_identical_pictures_are_not_a_pair():
    s = slot(0)
    s.images["0.5"] = ImageRef("c", 0, s.images[""].sha256, "images/x.png", "0.5", None)  # scale 0.5 == baseline
    assert (("", "0.5") not in s.pairs()) and len(s.pairs()) == 2
    assert pair_key("k", "b" * 64, "a" * 64) == pair_key("k", "a" * 64, "b" * 64)


def test_review_of_a_run_with_nothing_to_compare_is_a_usage_error(tmp_path):
    from lorascope.harness.runner import run_suite_async
    from lorascope.harness.store import SharedCache
    from lorascope.harness.suite import load_suite
    from tests.helpers.harness_fakes import CATALOGUE, lookup

    (tmp_path / "loras.yaml").write_text(CATALOGUE)
    (tmp_path / "suite.yaml").write_text("name: base\nproviders: [fakeasync]\nprompts: [{id: a, text: a cat}]\n"
                                         "seeds: [1]\nsize: 64x64\nsteps: 2\n")
    asyncio.run(run_suite_async(load_suite(tmp_path / "suite.yaml"), tmp_path / "run", provider_lookup=lookup,
                                progress=False, cache=SharedCache(tmp_path / "cache")))
    r = CliRunner().invoke(app, ["review", str(tmp_path / "run"), "--port", "0"])
    assert r.exit_code == 2 and "nothing to compare" in r.output
    r = CliRunner().invoke(app, ["review", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a lorascope run" in r.output
