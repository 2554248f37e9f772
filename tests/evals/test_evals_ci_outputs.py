"""`lorascope compare --junit / --markdown` and $GITHUB_STEP_SUMMARY: what a CI job shows."""

from __future__ import annotations

import hashlib
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from lorascope.cli import app
from lorascope.evals.ci_outputs import (
    RUN_LEVEL_CASE,
    append_step_summary,
    junit_xml,
    markdown_summary,
)
from lorascope.evals.compare import VERDICTS, CellComparison, CompareReport, Tolerances

HOSTILE = "ink<script>alert(1)</script>|x]]>\x07"


def cell(provider, lora, seed, verdict, reasons, **kw) -> CellComparison:
    return CellComparison(provider, lora, "0.8" if lora else "", kw.pop("prompt_id", "lighthouse"), seed, "{}",
                          kw.pop("image_index", 0), verdict=verdict, reasons=reasons, **kw)


def make_report(cells, *, overall=None, notes=(), providers=None) -> CompareReport:
    counts = {v: sum(1 for c in cells if c.verdict == v) for v in VERDICTS}
    if overall is None:
        overall = "regressed" if counts["regressed"] or counts.get("damaged") else ("drifted" if any(
            counts[v] for v in ("drifted", "missing", "new")) else "same")
    return CompareReport("runs/base", "runs/today", "tiny-random", Tolerances(), list(cells),
                         providers or {}, overall=overall, counts=counts, notes=list(notes))


@pytest.fixture
def mixed() -> CompareReport:
    return make_report([
        cell("fal", "ink", 1, "same", ["identical image (same sha256)"], image_cosine=1.0, ssim=1.0),
        cell("fal", "ink", 2, "regressed", ["SSIM 0.4100 < 0.6"], image_cosine=0.95, ssim=0.41,
             baseline_image="/b/2.png", run_image="/r/2.png"),
        cell("fal", "", 3, "new", ["not in the baseline"]),
        cell("diffusers", "ink", 4, "drifted", ["deterministic provider returned different bytes (cosine 0.9990, SSIM 0.9950)"],
             image_cosine=0.999, ssim=0.995, clip_score_delta=-0.01),
        cell("diffusers", HOSTILE, 5, "missing", ["not in the run"], prompt_id="p|1"),
        cell("diffusers", "ink", 6, "same", ["identical image (same sha256)"], image_index=1),
    ], providers={"fal": {"baseline_latency_median_s": 1.0, "run_latency_median_s": 1.5,
                          "baseline_cost_per_image_usd": 0.0085, "run_cost_per_image_usd": 0.0085}})


def test_junit_has_one_case_per_cell_and_fails_what_changed(mixed):
    root = ET.fromstring(junit_xml(mixed))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped"), root.get("errors")) == ("6", "3", "1", "0")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["lorascope compare: diffusers", "lorascope compare: fal"]
    fal, local = suites["lorascope compare: fal"], suites["lorascope compare: diffusers"]
    assert (fal.get("tests"), fal.get("failures"), fal.get("skipped")) == ("3", "1", "1")
    assert (local.get("tests"), local.get("failures"), local.get("skipped")) == ("3", "2", "0")
    props = {p.get("name"): p.get("value") for p in fal.find("properties")}
    assert props == {"baseline": "runs/base", "run": "runs/today", "clip_model": "tiny-random", "overall": "regressed"}

    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    regressed = cases[("lorascope.compare.fal", "ink@0.8 prompt=lighthouse seed=2")].find("failure")
    assert regressed.get("type") == "regressed"
    assert regressed.get("message") == "fal ink@0.8 prompt=lighthouse seed=2: regressed: SSIM 0.4100 < 0.6"
    assert "SSIM: 0.4100" in regressed.text and "baseline: /b/2.png" in regressed.text and "run: /r/2.png" in regressed.text
    drifted = cases[("lorascope.compare.diffusers", "ink@0.8 prompt=lighthouse seed=4")]
    assert drifted.find("failure").get("type") == "drifted"  # a drifted cell is a failed test case
    assert "CLIPScore change: -0.0100" in drifted.find("failure").text
    passed = cases[("lorascope.compare.fal", "ink@0.8 prompt=lighthouse seed=1")]
    assert passed.find("failure") is None and passed.find("skipped") is None
    assert passed.find("system-out").text == "identical image (same sha256)"
    assert cases[("lorascope.compare.diffusers", "ink@0.8 prompt=lighthouse seed=6 image=1")].find("failure") is None
    new = cases[("lorascope.compare.fal", "baseline (no LoRA) prompt=lighthouse seed=3")]
    assert new.find("skipped").get("message").endswith("new: not in the baseline")
    # run-supplied text survives as text: parsed back intact, minus the control character
    hostile = [c for c in root.iter("testcase") if "seed=5" in c.get("name")][0]
    assert hostile.get("name") == "ink<script>alert(1)</script>|x]]>\N{REPLACEMENT CHARACTER}@0.8 prompt=p|1 seed=5"
    assert hostile.find("failure").get("type") == "missing"
    assert RUN_LEVEL_CASE not in {c.get("name") for c in root.iter("testcase")}


def test_a_failure_no_cell_explains_is_a_run_level_case():
    """A provider's median latency past --tolerance latency_ratio regresses the comparison
    with every cell unchanged: the JUnit file must fail too, saying why."""
    note = "fal: median latency x3.00 (tolerance x2.0)"
    report = make_report([cell("fal", "ink", 1, "same", ["identical image (same sha256)"])], overall="regressed",
                         notes=[note])
    root = ET.fromstring(junit_xml(report))
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    run_level = [c for c in root.iter("testcase") if c.get("name") == RUN_LEVEL_CASE][0]
    assert run_level.find("failure").get("message") == note
    # with a regressed or damaged cell to point at, no extra case
    report = make_report([cell("fal", "ink", 1, "regressed", ["SSIM 0.1 < 0.6"])], notes=[note])
    assert RUN_LEVEL_CASE not in junit_xml(report).decode()
    damaged = make_report([cell("fal", "ink", 1, "damaged", ["run image file missing"])], overall="regressed")
    root = ET.fromstring(junit_xml(damaged))
    assert [c.find("failure").get("type") for c in root.iter("testcase")] == ["damaged"]


def test_a_run_served_from_the_cache_fails_the_junit_file_unless_allowed():
    """Every image of the run came from the shared cache: its cells compare stored results,
    so a `same` everywhere proves nothing. The run-level case says so, even beside a
    regressed cell, and passes (absent) with --allow-cached."""
    why = "all 2 images of runs/today came from the shared generation cache: ...; this comparison fails"
    cells = [cell("fal", "ink", 1, "same", ["identical image (same sha256)"]),
             cell("fal", "ink", 2, "same", ["identical image (same sha256)"])]
    report = make_report(cells, notes=[why])
    report.run_images = report.cached_images = 2
    root = ET.fromstring(junit_xml(report))
    run_level = [c for c in root.iter("testcase") if c.get("name") == RUN_LEVEL_CASE]
    assert root.get("failures") == "1" and run_level[0].find("failure").get("message") == why
    assert markdown_summary(report).startswith(
        "## lorascope compare: ❌ same (not a check: the run came entirely from the cache)")
    with_regression = make_report([cells[0], cell("fal", "ink", 2, "regressed", ["SSIM 0.1 < 0.6"])], notes=[why])
    with_regression.run_images = with_regression.cached_images = 2
    assert ET.fromstring(junit_xml(with_regression)).get("failures") == "2"  # the cell and the run-level case
    report.allow_cached = True
    assert ET.fromstring(junit_xml(report)).get("failures") == "0"
    assert markdown_summary(report).startswith("## lorascope compare: ✅ same\n")


def test_markdown_gives_verdict_counts_per_provider_and_worst_cells_escaped(mixed):
    text = markdown_summary(mixed)
    lines = text.splitlines()
    assert lines[0] == "## lorascope compare: ❌ regressed"
    assert "6 cells (2 same, 1 drifted, 1 regressed, 1 missing, 1 new)" in text
    header = next(line for line in lines if line.startswith("| provider |"))
    assert header.count("|") == len(VERDICTS) + 4
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in lines if line.startswith(("| fal |", "| diffusers |"))}
    fal = dict(zip(columns, rows["fal"]))
    assert (fal["same"], fal["regressed"], fal["new"], fal["drifted"]) == ("1", "1", "1", "0")
    assert fal["median latency s (baseline → run)"] == "1.00 → 1.50"
    local = dict(zip(columns, rows["diffusers"]))
    assert (local["same"], local["drifted"], local["missing"]) == ("1", "1", "1")
    worst = [line for line in lines[lines.index(next(x for x in lines if x.startswith("### Worst"))):]
             if line.startswith("| ") and not line.startswith("| verdict")]
    assert [w.split("|")[1].strip() for w in worst] == ["regressed", "drifted", "missing", "new"]
    assert "<script>" not in text and "&lt;script&gt;" in text and "\x07" not in text
    hostile = next(w for w in worst if "seed=5" in w)
    assert hostile.count(" | ") == 7  # the LoRA's and the prompt's | are escaped, the table keeps its columns
    short = markdown_summary(mixed, worst=1)
    assert "### Worst cells (1 of 4 changed)" in short and "3 more changed cell(s)" in short


def test_markdown_of_an_unchanged_comparison():
    text = markdown_summary(make_report([cell("fal", "ink", 1, "same", ["identical image (same sha256)"])]))
    assert text.startswith("## lorascope compare: ✅ same") and "No cell changed." in text


def test_step_summary_is_appended_only_when_github_names_a_file(tmp_path):
    summary = tmp_path / "step_summary.md"
    summary.write_text("# earlier step\n", encoding="utf-8")
    assert append_step_summary("## ours", {"GITHUB_STEP_SUMMARY": str(summary)}) == summary
    assert summary.read_text(encoding="utf-8") == "# earlier step\n## ours\n"
    assert append_step_summary("## ours", {}) is None


def _replace_image(run: Path, lora: str, change) -> str:
    """Swap one stored image of `lora` for `change(image)`; returns its new file name."""
    with sqlite3.connect(run / "run.db") as conn:
        gid, rel = conn.execute(
            "SELECT i.generation_id, i.path FROM images i JOIN generations g ON g.id = i.generation_id "
            "JOIN cells c ON c.fingerprint = g.fingerprint WHERE c.lora = ? ORDER BY i.path LIMIT 1", (lora,)).fetchone()
        new_rel = f"images/changed-{lora}.png"
        change(Image.open(run / rel).convert("RGB")).save(run / new_rel)
        sha = hashlib.sha256((run / new_rel).read_bytes()).hexdigest()
        conn.execute("UPDATE images SET path = ?, sha256 = ? WHERE generation_id = ?", (new_rel, sha, gid))
    return new_rel


def _nudge(img: Image.Image) -> Image.Image:
    arr = np.asarray(img).astype(np.int16)
    arr[::7, ::5] += 1  # one 8-bit level on a few pixels: the picture is the same, the bytes are not
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_compare_cli_writes_junit_markdown_and_the_step_summary(tiny_run: Path, tmp_path: Path):
    from lorascope.evals.session import copy_run

    other = copy_run(tiny_run, tmp_path / "other")
    _replace_image(other, "tiny-ink", ImageOps.invert)  # regressed
    _replace_image(other, "tiny-neon", _nudge)  # the deterministic local pipeline: drifted
    summary = tmp_path / "gh" / "summary.md"
    summary.parent.mkdir()
    summary.write_text("earlier\n", encoding="utf-8")
    junit, markdown = tmp_path / "ci" / "junit.xml", tmp_path / "ci" / "summary.md"
    result = CliRunner().invoke(
        app, ["compare", str(tiny_run), str(other), "--clip", "tiny-random", "--no-progress",
              "--junit", str(junit), "--markdown", str(markdown)],
        env={"COLUMNS": "200", "GITHUB_STEP_SUMMARY": str(summary)}, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert str(junit) in result.output and str(markdown) in result.output

    root = ET.fromstring(junit.read_bytes())
    cases = list(root.iter("testcase"))
    assert len(cases) == int(root.get("tests")) == 28
    failures = {c.find("failure").get("type"): c for c in cases if c.find("failure") is not None}
    assert sorted(failures) == ["drifted", "regressed"] and root.get("failures") == "2"
    regressed = failures["regressed"].find("failure")
    assert regressed.get("message").startswith("diffusers tiny-ink@") and "prompt=" in regressed.get("message")
    assert "seed=" in regressed.get("message") and "SSIM" in regressed.get("message")
    assert "changed-tiny-ink.png" in regressed.text
    drifted = failures["drifted"]
    assert drifted.get("classname") == "lorascope.compare.diffusers" and drifted.get("name").startswith("tiny-neon@")
    assert "deterministic provider returned different bytes" in drifted.find("failure").get("message")

    text = markdown.read_text(encoding="utf-8")
    assert text.startswith("## lorascope compare: ❌ regressed") and "| diffusers | 26 | 1 | 1 |" in text
    assert summary.read_text(encoding="utf-8") == "earlier\n" + text

    # --no-step-summary leaves the job summary alone; a folder for --junit is a usage error
    again = CliRunner().invoke(
        app, ["compare", str(tiny_run), str(tiny_run), "--clip", "tiny-random", "--no-progress",
              "--junit", str(junit), "--no-step-summary"],
        env={"COLUMNS": "200", "GITHUB_STEP_SUMMARY": str(summary)}, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert ET.fromstring(junit.read_bytes()).get("failures") == "0"
    assert summary.read_text(encoding="utf-8") == "earlier\n" + text
    bad = CliRunner().invoke(app, ["compare", str(tiny_run), str(other), "--junit", str(tmp_path)],
                             env={"COLUMNS": "200"}, catch_exceptions=False)
    assert bad.exit_code == 2 and "directory" in bad.output, bad.output


def test_markdown_renders_as_the_tables_it_means_with_run_text_as_text(mixed):
    """Rendered by a CommonMark parser with GitHub's table extension (markdown-it-py, what rich
    uses): every row keeps its columns and hostile names come out as text, not markup."""
    import re

    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(markdown_summary(mixed))
    tables = re.findall(r"<table>(.*?)</table>", rendered, re.S)
    assert len(tables) == 2
    for table in tables:
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)}
        assert len(widths) == 1, widths
    assert "<script>" not in rendered
    assert "<td>ink&lt;script&gt;alert(1)&lt;/script&gt;|x]]&gt; @0.8 prompt=p|1 seed=5</td>" in rendered
