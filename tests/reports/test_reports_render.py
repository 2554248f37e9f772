"""The run report without a browser: what the view model holds and what the HTML file says."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from report_fixtures import (
    LORAS,
    PROMPTS,
    PROVIDERS,
    SCALES,
    SEEDS,
    XSS_ERROR,
    XSS_NOTE,
    XSS_PROMPT,
    grid_images,
)

from lorascope.reports.build_run import build_run_view
from lorascope.reports.plots import Curve, CurvePoint, PlotSpec, build_plot, nice_ticks
from lorascope.reports.service import write_run_data_report


def _tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, attrs))

    Collect().feed(html)
    return tags


def _html(data) -> str:
    return write_run_data_report(data).read_text(encoding="utf-8")


def _grid_json(html: str) -> dict:
    """The page's grid data block, parsed as the page's script parses it."""
    import json

    blocks = re.findall(r'<script type="application/json" id="grid-data">(.*?)</script>', html, re.S)
    assert len(blocks) == 1
    return json.loads(blocks[0])


def _image_urls(html: str) -> list[str]:
    images = _grid_json(html)["images"]
    return [i["thumb"] for i in images if "thumb" in i] + [i["full"] for i in images if "full" in i]


def test_grid_data_places_every_generation_once_on_its_axes(scored_run):
    view = build_run_view(scored_run)
    assert [s.id for s in view.sections] == LORAS
    axes = {a.id: [v.key for v in a.values] for a in view.grid.axes}
    assert axes == {"lora": LORAS, "scale": ["baseline", *(f"{s:g}" for s in SCALES)], "provider": PROVIDERS,
                    "prompt": [p for p, _ in PROMPTS], "seed": [str(s) for s in SEEDS]}
    frame = scored_run.results
    assert len(view.grid.images) == len(frame)  # one per generation, baselines once (not per LoRA)
    for _, row in frame.iterrows():
        coords = dict(provider=row.provider, prompt=row.prompt_id, seed=str(row.seed),
                      scale=f"{row.scale:g}" if row.lora else "baseline")
        found = grid_images(view, lora=row.lora or LORAS[0], **coords)
        assert len(found) == 1, coords
        ok = row.status == "ok"
        assert (found[0].sha, found[0].full) == ((row.image_sha256, row.image_path) if ok else ("", None))
        # a baseline belongs to every LoRA's grid: its LoRA position is "any"
        assert (found[0].at[0] == -1) == (row.lora == "")
    prompt = next(a for a in view.grid.axes if a.id == "prompt")
    assert [v.title for v in prompt.values] == [t for _, t in PROMPTS]


def test_default_views_answer_the_common_question(scored_run):
    """Columns: scale, baseline first; rows: prompt x seed; one provider at a time. The
    run-wide grid: one row per LoRA at the first prompt and seed."""
    view = build_run_view(scored_run)
    for section in view.sections:
        assert section.grid.locked == {"lora": section.id}
        default = section.grid.default
        assert (default.rows, default.cols, default.fixed) == (["prompt", "seed"], ["scale"], {"provider": "fal"})
    run = view.run_grid
    assert (run.default.rows, run.default.cols) == (["lora"], ["scale"])
    assert run.default.fixed == {"provider": "fal", "prompt": "trex", "seed": "42"}
    assert [s.anchor for s in view.grid.sections] == [*(s.anchor for s in view.sections), "all-loras"]


def test_recommended_scales_are_marked_per_provider_and_from_the_catalogue(scored_run):
    view = build_run_view(scored_run)
    section = view.sections[0]
    by_scale = {c.scale: c for c in section.columns}
    assert by_scale[0.8].catalogue_recommended and not by_scale[1.0].catalogue_recommended
    assert by_scale[0.8].run_recommended_by == ["fal"]
    assert by_scale[1.0].run_recommended_by == ["novita"]
    assert section.grid.marks == {"0.8": ["catalogue rec.", "run rec.: fal"], "1": ["run rec.: novita"]}
    (fal_08,) = grid_images(view, lora="ink-wash", scale="0.8", provider="fal", prompt="trex", seed="1234")
    (novita_08,) = grid_images(view, lora="ink-wash", scale="0.8", provider="novita", prompt="trex", seed="1234")
    assert fal_08.rec and not novita_08.rec
    assert {r.provider: (r.scale, r.agrees) for r in section.recommendations} == {
        "fal": ("0.8", True), "novita": ("1", False)}


def test_failed_and_nsfw_cells_are_listed_with_reasons(scored_run):
    view = build_run_view(scored_run)
    failed = [p for p in view.problems if p.kind == "failed"]
    nsfw = [p for p in view.problems if p.kind == "nsfw"]
    assert [(p.provider, p.lora, p.scale, p.prompt_id, p.seed) for p in failed] == [
        ("fal", "ink-wash", "1", "trex", "42")]
    assert "HTTP 500" in failed[0].reason
    assert [(p.provider, p.lora, p.scale, p.prompt_id, p.seed) for p in nsfw] == [
        ("novita", "pixel-art", "0.5", "lighthouse", "1234")]
    (figure,) = grid_images(view, lora="ink-wash", scale="1", provider="fal", prompt="trex", seed="42")
    assert figure.status == "failed" and "HTTP 500" in figure.reason and figure.thumb is None


def test_thumbnails_are_made_once_and_reused(scored_run):
    write_run_data_report(scored_run)
    thumbs = sorted((scored_run.run_dir / "thumbs").glob("*.jpg"))
    images = scored_run.results.image_sha256.dropna().unique()
    assert len(thumbs) == len(images)
    mtimes = {p: p.stat().st_mtime_ns for p in thumbs}
    write_run_data_report(scored_run)
    assert {p: p.stat().st_mtime_ns for p in thumbs} == mtimes
    assert not list((scored_run.run_dir / "thumbs").glob(".tmp-*"))


def test_html_is_self_contained_and_points_at_files_in_the_run_folder(scored_run):
    html = _html(scored_run)
    run = scored_run.run_dir
    # nothing to fetch but the run's own files (the icon is an empty data: URL, so a served
    # report does not ask the server for /favicon.ico)
    assert re.findall(r"<link[^>]*>", html) == ['<link rel="icon" href="data:,">']
    assert "<script src" not in html and "@import" not in html and "url(" not in html
    assert re.findall(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<]*", html) == []  # no URL of any scheme, anywhere
    # images are not in the markup: the page's script builds the visible slice from the data
    assert "<img" not in html.split("<main>", 1)[1].split("</main>", 1)[0]
    images = _grid_json(html)["images"]
    srcs, hrefs = [i["thumb"] for i in images if "thumb" in i], [i["full"] for i in images if "full" in i]
    assert len(srcs) == len(hrefs) == scored_run.results.image_path.notna().sum()
    for url in srcs + hrefs:
        assert not re.match(r"^[a-z]+:", url) and not url.startswith("/"), url
        assert (run / url).is_file(), url
    assert all(u.startswith("thumbs/") for u in srcs)
    # a Content-Security-Policy that allows exactly our one script, and nothing from the network
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", csp)


def test_scored_report_has_plots_with_ci_bands_and_recommended_scale(scored_run):
    section = build_run_view(scored_run).sections[0]
    titles = [p.title for p in section.plots]
    assert any("Style shift" in t for t in titles) and any("CLIPScore" in t for t in titles)
    for plot in section.plots:
        assert [s.label for s in plot.series] == PROVIDERS
        assert all(s.band.startswith("M") and s.band.endswith("Z") for s in plot.series)
        assert all(len(s.points) == len(SCALES) for s in plot.series)
        labels = [m.label for m in plot.markers]
        assert "fal rec. 0.8" in labels and "novita rec. 1" in labels and "catalogue 0.8" in labels
    html = _html(scored_run)
    assert html.count('<path class="band"') == len(LORAS) * 2 * len(PROVIDERS)


def test_unscored_run_says_so_and_still_shows_images_latency_and_cost(unscored_run):
    view = build_run_view(unscored_run)
    assert not view.scored and "not scored yet" in view.score_note
    assert all(not s.plots for s in view.sections)
    assert {i.status for i in grid_images(view, lora="ink-wash", scale="0.5")} == {"ok"}
    assert all(i.caption and not any(c.startswith("CLIP") for c in i.caption) for i in view.grid.images if i.thumb)
    assert [p.provider for p in view.provider_stats] == PROVIDERS
    html = _html(unscored_run)
    assert 'id="not-scored"' in html and "Latency and cost per provider" in html
    assert "$0.0085" in html  # fal's cost per image


def test_untrusted_text_is_escaped_everywhere(hostile_run):
    html = _html(hostile_run)
    for payload in (XSS_PROMPT, XSS_NOTE, XSS_ERROR):
        assert payload not in html
    # parsed as a browser would: our one script element, no event-handler attribute anywhere
    tags = _tags(html)
    # our one script, and one data block the browser never runs
    assert [dict(a).get("type") for t, a in tags if t == "script"] == ["application/json", None]
    assert [(t, a) for t, attrs in tags for a, _ in attrs if a.startswith("on")] == []
    assert not [attrs for t, attrs in tags if t == "img" and ("src", "x") in attrs]
    # in the data block, <, > and & are JSON escapes: nothing there can end the element
    block = html.split('id="grid-data">', 1)[1].split("</script>", 1)[0]
    assert not set(block) & set("<>&")
    data = _grid_json(html)
    assert XSS_PROMPT in [v["title"] for a in data["axes"] if a["id"] == "prompt" for v in a["values"]]
    assert any(XSS_ERROR in i.get("reason", "") for i in data["images"])
    assert "&lt;svg onload=alert(3)&gt;" in html
    assert "&lt;/div&gt;&lt;script&gt;alert(&#34;note&#34;)" in html


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0.5, 1.5) == [0.5, 0.75, 1.0, 1.25, 1.5]
    ticks = nice_ticks(-0.013, 0.087)
    assert ticks[0] <= -0.013 and ticks[-1] >= 0.087
    assert nice_ticks(2.0, 2.0)[0] <= 2.0


def test_plot_maps_data_inside_the_frame_and_higher_values_higher():
    spec = PlotSpec(title="t", y_label="y", curves=[Curve(label="a", color="#000", recommended_x=1.0, points=[
        CurvePoint(x=0.5, mean=0.1, lo=0.05, hi=0.15, n=4), CurvePoint(x=1.0, mean=0.3, lo=0.2, hi=0.4, n=4)])])
    plot = build_plot(spec)
    (a, b) = plot.series[0].points
    for p in (a, b):
        assert plot.plot_left <= p.x <= plot.plot_right and plot.plot_top <= p.y <= plot.plot_bottom
    assert b.x > a.x and b.y < a.y  # SVG y grows downwards
    assert plot.markers[0].x1 == pytest.approx(b.x)


def test_plot_without_data_says_why():
    plot = build_plot(PlotSpec(title="t", y_label="y", curves=[]))
    assert plot.empty_reason and not plot.series


def test_option_axes_become_side_by_side_variants_and_stacks_get_their_own_grid(scored_run):
    frame = scored_run.results
    fal = frame[frame.provider == "fal"]
    axes = [fal.assign(axes='{"acceleration": "none"}'), fal.assign(axes='{"acceleration": "high"}')]
    stack = frame[(frame.lora == "ink-wash") & (frame.scale == 0.5) & (frame.provider == "novita")].assign(
        lora="ink-wash+pixel-art", scales="0.5+0.8", cell_id=lambda d: d.cell_id + "-stack")
    others = frame[frame.provider != "fal"].assign(axes="{}")
    data = scored_run.model_copy(update={"results": pd.concat([*axes, others, stack.assign(axes="{}")],
                                                              ignore_index=True)})
    view = build_run_view(data)
    assert view.providers == ["fal [acceleration=none]", "fal [acceleration=high]", "novita"]
    # the option sweep is an axis of its own (side by side by default); novita, without
    # the option, belongs to every value of it
    axes = {a.id: [v.key for v in a.values] for a in view.grid.axes}
    assert axes["opt:acceleration"] == ["none", "high"] and axes["provider"] == ["fal", "novita"]
    ink = view.sections[0]
    assert ink.grid.default.fixed == {"provider": "fal", "opt:acceleration": "*"}
    cell = dict(lora="ink-wash", scale="0.8", prompt="trex", seed="1234")
    assert [(i.provider, i.rec) for i in grid_images(view, opt_acceleration="high", **cell)] == [
        ("fal [acceleration=high]", True), ("novita", False)]  # recommendations are per provider
    stacked = next(s for s in view.sections if s.id == "ink-wash+pixel-art")
    assert stacked.is_stack and [c.label for c in stacked.columns] == ["no LoRA (baseline)", "scale 0.5+0.8"]
    assert "0.5+0.8" in axes["scale"] and "ink-wash+pixel-art" in axes["lora"]
    in_stack = grid_images(view, lora="ink-wash+pixel-art", scale="0.5+0.8", prompt="trex", seed="1234")
    assert [i.provider for i in in_stack] == ["novita"]


def test_a_run_with_no_generations_yet_still_renders(tmp_path):
    from lorascope.reports.inputs import RunData

    data = RunData(run_dir=tmp_path, results=pd.DataFrame(columns=["provider", "lora", "scale", "prompt_id",
                                                                   "seed", "status", "image_path"]))
    view = build_run_view(data)
    assert view.sections == [] and view.problems == [] and view.provider_stats == []
    assert "no LoRA generations" in write_run_data_report(data).read_text()


def test_a_report_written_elsewhere_links_back_into_the_run_folder(scored_run, tmp_path):
    out = tmp_path / "shared" / "smoke report.html"
    html = write_run_data_report(scored_run, out).read_text()
    urls = _image_urls(html)
    assert urls and all("%20" not in u for u in urls)
    from urllib.parse import unquote

    for url in urls:
        assert (out.parent / unquote(url)).resolve().is_file(), url


def test_random_weight_banner_says_so_and_names_every_hosted_key_without_a_url(scored_run):
    """The demo's banner: plain words that the pictures are noise, how to run the suite on the
    hosted providers, where to get each key (as text, not a link: the file holds no URL)."""
    data = scored_run.model_copy(update={"results": scored_run.results.assign(model_version="tiny-random")})
    html = write_run_data_report(data, scored_run.run_dir / "random.html").read_text(encoding="utf-8")
    assert "These images come from random-weight models" in html
    for needle in ("FAL_KEY", "NOVITA_API_KEY", "HIGHWAY_API_KEY", "AIMLAPI_KEY", "fal.ai/dashboard/keys"):
        assert needle in html, needle
    from lorascope.harness.providers import provider_class
    from lorascope.reports.howto import KEY_PAGES

    for name, page in KEY_PAGES.items():  # the variable each provider really reads, beside its key page
        assert f"export {provider_class(name).env_key_var}=...   # {name}: {page}" in html
    assert re.findall(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<]*", html) == []


def test_compare_report_escapes_prompts_provider_messages_and_file_names(tmp_path):
    """The comparison report shows the same kinds of outside text as the run report, plus
    evals' reasons (which carry file paths): all of it as text, and a hostile folder name
    neither breaks out of an attribute nor stops the images from resolving."""
    from urllib.parse import unquote

    from report_fixtures import png

    from lorascope.reports.build_compare import build_compare_view
    from lorascope.reports.inputs import CompareCellData, CompareData, CompareSide
    from lorascope.reports.render import render, write_html

    folder = 'run "><img src=x onerror=alert(4)>'
    base_dir, run_dir = tmp_path / "base", tmp_path / folder
    base_sha = png(base_dir / "images" / "a.png", (10, 20, 30))
    run_sha = png(run_dir / "images" / "a.png", (200, 20, 30))
    cells = [
        CompareCellData(provider="fal", lora="ink", scale="1", prompt_id="trex", prompt=XSS_PROMPT, seed="42",
                        verdict="regressed",
                        reasons=[f"SSIM 0.1 < 0.6; image {run_dir / 'images' / 'a.png'}"],
                        baseline=CompareSide(image=base_dir / "images" / "a.png", sha256=base_sha, status="succeeded"),
                        current=CompareSide(image=run_dir / "images" / "a.png", sha256=run_sha, status="succeeded")),
        CompareCellData(provider="fal", lora="ink", scale="1", prompt_id="trex", prompt=XSS_PROMPT, seed="7",
                        verdict="regressed", reasons=[f"no image now ({XSS_ERROR})"],
                        baseline=CompareSide(image=base_dir / "images" / "a.png", sha256=base_sha, status="succeeded"),
                        current=CompareSide(status="failed", error=XSS_ERROR)),
    ]
    data = CompareData(baseline_dir=base_dir, run_dir=run_dir, overall="regressed",
                       settings={"Notes": XSS_NOTE}, cells=cells)
    out = write_html(run_dir / "compare.html", render("compare.html.j2", build_compare_view(data)))
    html = out.read_text(encoding="utf-8")
    for payload in (XSS_PROMPT, XSS_NOTE, XSS_ERROR, folder):
        assert payload not in html, payload
    assert "&lt;script&gt;alert(&#34;prompt&#34;)&lt;/script&gt;" in html
    assert "&lt;svg onload=alert(3)&gt;" in html and "run &#34;&gt;&lt;img src=x onerror=alert(4)&gt;" in html
    tags = _tags(html)
    assert [dict(a).get("type") for t, a in tags if t == "script"] == ["application/json", None]
    assert not set(html.split('id="compare-data">', 1)[1].split("</script>", 1)[0]) & set("<>&")
    assert [(t, a) for t, attrs in tags for a, _ in attrs if a.startswith("on")] == []
    urls = [v for t, attrs in tags for a, v in attrs if (t, a) in (("img", "src"), ("a", "href"))]
    assert len(urls) == 6  # thumbnail + full-size link: 2 baseline images, 1 current (the other failed)
    for url in urls:
        assert (out.parent / unquote(url)).resolve().is_file(), url


def test_summary_names_suite_providers_versions_counts_failures_cost_and_time(scored_run):
    from lorascope.reports import fmt

    summary = {kv.key: kv.value for kv in build_run_view(scored_run).summary}
    frame = scored_run.results
    n = len(frame)
    assert summary["Suite"] == "synthetic-smoke" and summary["Providers"] == "fal, novita"
    assert summary["Model versions"] == "fal: fal-v1; novita: novita-v1"
    assert summary["LoRAs"] == str(len(LORAS))
    assert summary["Generations"] == f"{n} ({n - 1} ok, 1 failed)" and summary["NSFW-flagged"] == "1"
    assert summary["Total cost"] == f"{fmt.usd(frame.cost_usd.sum())} ({n} estimated)"
    assert summary["Generation time (sum)"] == fmt.seconds(frame.latency_s.sum())
    assert summary["Scored"] == "yes (tiny-random)"


def test_a_compared_side_without_an_image_shows_its_error_not_a_broken_link(tmp_path):
    """A failed generation's row has no image path (NaN in the frame, None in JSON): the
    comparison shows the provider's message, never a link to RUN/nan."""
    from lorascope.reports.compare_sources import _side

    failed = _side({"status": "failed", "image_path": float("nan"), "error": XSS_ERROR, "latency_s": 2.0},
                   tmp_path, None, None)
    assert failed.image is None and failed.error == XSS_ERROR and failed.latency_s == 2.0
    pending = _side({"status": "submitted", "image_path": None, "error": None}, tmp_path, None, None)
    assert pending.image is None and pending.status == "submitted" and pending.error == ""
    ok = _side({"status": "succeeded", "image_path": "images/a.png", "image_sha256": "abc"}, tmp_path, None, None)
    assert ok.image == tmp_path / "images" / "a.png" and ok.sha256 == "abc"


def test_report_compare_without_clip_weights_is_a_usage_error_like_compare(tmp_path, monkeypatch):
    """No compare.json yet and no CLIP weights here: exit 2 with the scorer's fix, the same
    code `lorascope compare` gives for it (not 1, which means 'a check failed')."""
    import lorascope.evals.compare as evals_compare
    from lorascope.evals.scorer import ScorerUnavailable
    from lorascope.reports.compare_sources import _compare_now
    from lorascope.reports.errors import ReportError

    def no_weights(*args, **kwargs):
        raise ScorerUnavailable("CLIP weights ViT-B-32:openai are not on this machine; set LORASCOPE_CLIP_CHECKPOINT")

    monkeypatch.setattr(evals_compare, "compare_runs", no_weights)
    with pytest.raises(ReportError) as err:
        _compare_now(tmp_path / "base", tmp_path / "run")
    assert err.value.exit_code == 2 and "LORASCOPE_CLIP_CHECKPOINT" in str(err.value)


def test_strength_and_input_image_columns_become_axes_when_a_run_has_them(scored_run):
    """Image-conditioned runs (strength, init image) get those axes; a row without them
    (a text-to-image baseline) belongs to every value, like a baseline to every LoRA."""
    frame = scored_run.results
    halves = [frame.assign(strength=s, init_image="cat.png", image_sha256=frame.image_sha256 + f"-{s}",
                           cell_id=frame.cell_id + f"-{s}") for s in (0.3, 0.7)]
    data = scored_run.model_copy(update={"results": pd.concat(halves, ignore_index=True)})
    view = build_run_view(data)
    axes = {a.id: [v.key for v in a.values] for a in view.grid.axes}
    assert axes["strength"] == ["0.3", "0.7"] and axes["init_image"] == ["cat.png"]
    assert next(a.label for a in view.grid.axes if a.id == "init_image") == "image"
    (img,) = grid_images(view, lora="ink-wash", scale="0.5", provider="fal", prompt="trex", seed="42", strength="0.7")
    assert img.sha.endswith("-0.7")
    # a strength sweep opens as strength x scale (issue 14), at the first prompt, seed and image
    default = view.sections[0].grid.default
    assert (default.rows, default.cols) == (["strength"], ["scale"])
    assert default.fixed == {"provider": "fal", "prompt": "trex", "seed": "42", "init_image": "cat.png"}
    one = build_run_view(scored_run.model_copy(update={"results": halves[0]})).sections[0].grid.default
    assert (one.rows, one.fixed["strength"]) == (["prompt", "seed"], "0.3")  # a single strength stays fixed


def test_every_grid_has_its_own_anchor_even_when_a_stack_and_a_lora_slug_alike(scored_run):
    """`a+b` and `a-b` both slug to lora-a-b; the anchor names the grid's view in the URL."""
    frame = scored_run.results
    ink = frame[frame.lora == "ink-wash"]
    stack = ink.assign(lora="ink+wash", scales=ink.scales + "+0.5", cell_id=ink.cell_id + "-stack")
    view = build_run_view(scored_run.model_copy(update={"results": pd.concat([frame, stack], ignore_index=True)}))
    anchors = [s.anchor for s in view.sections]
    assert anchors == ["lora-ink-wash", "lora-pixel-art", "lora-ink-wash-2"]
    assert [s.anchor for s in view.grid.sections] == [*anchors, "all-loras"]
    assert view.sections[2].grid.locked == {"lora": "ink+wash"}


def test_json_for_a_script_block_escapes_what_could_end_it_and_reads_back_the_same():
    import json

    from lorascope.reports.render import json_script
    from lorascope.reports.viewmodels import GridValue

    text = 'a</script><!-- & "q" \u2028\u2029 <b>'
    out = str(json_script(GridValue(key=text, label=text)))
    assert not set(out) & {"<", ">", "&", "\u2028", "\u2029"}
    assert "\\u003c/script\\u003e" in out and "\\u2028" in out
    assert json.loads(out) == {"key": text, "label": text}
