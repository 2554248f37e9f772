"""Honest reports (issue 18): a run scored with a random-weight CLIP carries the banner even
when its images are real; report files get the user's umask (not mkstemp's 0600); the
comparison report keeps regressed and drifted apart in its counts and colours."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from report_fixtures import make_run, png


def test_real_images_scored_with_tiny_random_carry_the_random_score_banner(tmp_path):
    from lorascope.reports.build_run import build_run_view

    data = make_run(tmp_path / "run", scored=True)  # fal/novita images (model fal-v1, novita-v1)
    assert build_run_view(data).banners == []  # no scorer recorded: nothing to warn about
    data.results["clip_model"] = "tiny-random-clip-v1"
    (banner,) = build_run_view(data).banners
    assert banner.title == "These scores come from a random-weight CLIP"
    assert "carry no meaning" in banner.paragraphs[0] and "--clip ViT-B-32:openai" in banner.paragraphs[1]
    data.results["clip_model"] = "open_clip:ViT-B-32:random-seed1234"
    assert [b.title for b in build_run_view(data).banners] == ["These scores come from a random-weight CLIP"]
    data.results["clip_model"] = "open_clip:ViT-B-32:openai"
    assert build_run_view(data).banners == []


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_report_files_get_the_users_umask(tmp_path, mask, mode):
    from lorascope.reports.render import write_html

    old = os.umask(mask)
    try:
        out = write_html(tmp_path / "report.html", "<p>hi</p>")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert out.read_text() == "<p>hi</p>" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


def _cell(base_dir: Path, run_dir: Path, provider: str, verdict: str, seed: str, colour: tuple[int, int, int]):
    from lorascope.reports.inputs import CompareCellData, CompareSide

    base = base_dir / "images" / f"{provider}-{seed}.png"
    cur = run_dir / "images" / f"{provider}-{seed}.png"
    return CompareCellData(
        provider=provider, lora="ink", scale="1", prompt_id="trex", prompt="a T-Rex", seed=seed, verdict=verdict,
        reasons=[verdict], baseline=CompareSide(image=base, sha256=png(base, (10, 20, 30)), status="succeeded"),
        current=CompareSide(image=cur, sha256=png(cur, colour), status="succeeded"))


def test_compare_report_counts_and_colours_regressed_apart_from_drifted(tmp_path):
    from html.parser import HTMLParser

    from lorascope.reports.build_compare import build_compare_view
    from lorascope.reports.inputs import CompareData
    from lorascope.reports.render import render, write_html

    base_dir, run_dir = tmp_path / "base", tmp_path / "run"
    cells = [_cell(base_dir, run_dir, "fal", "regressed", "1", (200, 0, 0)),
             _cell(base_dir, run_dir, "fal", "drifted", "2", (12, 20, 30)),
             _cell(base_dir, run_dir, "novita", "drifted", "1", (12, 22, 30)),
             _cell(base_dir, run_dir, "novita", "same", "2", (10, 20, 30))]
    data = CompareData(baseline_dir=base_dir, run_dir=run_dir, overall="regressed", settings={}, cells=cells)
    view = build_compare_view(data)
    summary = {kv.key: kv.value for kv in view.summary}
    assert (summary["Regressed"], summary["Drifted"], summary["Same"], summary["Missing"]) == ("1", "2", "1", "0")
    assert summary["Provider fal"] == "1 regressed, 1 drifted"
    assert summary["Provider novita"] == "1 drifted, 1 same"
    assert "Drifted cells" not in str(summary)

    html = write_html(run_dir / "compare.html", render("compare.html.j2", view)).read_text()

    class Pills(HTMLParser):
        found: list[tuple[str, str]] = []

        def handle_starttag(self, tag, attrs):
            self.cls = dict(attrs).get("class", "") if tag == "span" else None

        def handle_data(self, data):
            if getattr(self, "cls", None) and "pill" in self.cls:
                self.found.append((self.cls, data.strip()))
            self.cls = None

    parser = Pills()
    parser.feed(html)
    pills = set(parser.found)
    # the heading counts each verdict in its own colour; each cell's pill carries its verdict's class
    assert ("pill v-regressed", "1 regressed") in pills and ("pill v-drifted", "2 drifted") in pills
    assert ("pill v-regressed", "regressed") in pills and ("pill v-drifted", "drifted") in pills
    css = (Path(__file__).resolve().parents[2] / "reports" / "templates" / "report.css").read_text()
    rules = {r.split("{")[0]: r.split("{")[1] for r in css.split("}") if "{" in r}
    regressed = next(v for k, v in rules.items() if ".pill.v-regressed" in k)
    drifted = next(v for k, v in rules.items() if ".pill.v-drifted" in k)
    assert regressed != drifted
