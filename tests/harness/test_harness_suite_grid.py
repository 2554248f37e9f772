"""Suites load with all problems at once (file, line, field); grids expand as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorascope.harness.fingerprint import fingerprint
from lorascope.harness.grid import expand
from lorascope.harness.models import GenerationRequest, LoraSpec
from lorascope.harness.suite import SuiteError, load_suite, parse_suite
from tests.helpers.harness_fakes import BASIC, lookup

ROOT = Path(__file__).resolve().parents[2]


def test_issue_suite_loads_and_expands_as_written():
    suite = load_suite(ROOT / "suites" / "styles-smoke.yaml")
    assert [p.name for p in suite.providers] == ["fal", "novita", "highway", "aimlapi"]
    assert suite.providers[1].settings == {"concurrency": 4}
    assert (suite.width, suite.height, suite.steps) == (1024, 1024, 8)
    grid = expand(suite)
    # 4 providers x (baseline + 2 LoRAs x 4 scales) x 2 prompts x 2 seeds
    assert len(grid.cells) == 4 * 9 * 2 * 2
    assert grid.providers["novita"].config.concurrency == 4
    assert grid.providers["novita"].options == {}
    painted = [c for c in grid.cells if c.provider == "fal" and c.lora == "classic-painting" and c.prompt_id == "trex"]
    assert {c.scale for c in painted} == {0.5, 0.8, 1.0, 1.5}
    assert all("class1cpa1nt" in c.request.prompt and "class1cpa1nt" not in c.prompt for c in painted)
    assert len({c.cell_id for c in grid.cells}) == len(grid.cells)


def test_every_problem_at_once_with_file_line_and_field(write_suite):
    path = write_suite(
        "name: bad\n"                       # 1
        "providers: [fakeasync]\n"          # 2
        "prompts:\n"                        # 3
        "  - id: a\n"                       # 4
        "    text: x\n"                     # 5
        "  - id: a\n"                       # 6
        "    text: ''\n"                    # 7
        "seeds: [1, -3]\n"                  # 8
        "size: huge\n"                      # 9
        "colour: blue\n"                    # 10
    )
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert f"{path}:7: prompts[1].text: prompt text is empty" in text
    assert f"{path}:8: seeds:" in text and "-3" in text
    assert f"{path}:9: size:" in text and "huge" in text
    assert f"{path}:10: colour: unknown field" in text
    assert len(problems) >= 4


def test_yaml_syntax_error_names_the_line(write_suite):
    path = write_suite("name: x\nproviders: [a\nprompts: [b]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(path) in info.value.problems[0] and "not valid YAML" in info.value.problems[0]


def test_unknown_lora_provider_and_option_listed_together(write_suite):
    path = write_suite(
        "name: refs\n"
        "providers:\n"
        "  - fakeasync: {concurrency: 0, colour: red}\n"   # line 3
        "  - nosuch\n"                                     # line 4
        "loras: [paint, pain]\n"                           # line 5
        "prompts: [a cat]\n"
    )
    with pytest.raises(SuiteError) as info:
        expand(load_suite(path), lookup=lookup)
    text = "\n".join(info.value.problems)
    assert f"{path}:3: providers[0].fakeasync.concurrency:" in text
    assert f"{path}:3: providers[0].fakeasync.colour: unknown option" in text
    assert f"{path}:4: providers[1]: unknown provider 'nosuch'" in text
    assert f"{path}:5: loras[1]: no entry 'pain'" in text and "did you mean 'paint'" in text


def test_baselines_axes_config_split_and_stacks(write_suite):
    suite = load_suite(write_suite(
        "name: axes\n"
        "providers:\n"
        "  - fakeasync: {concurrency: 3, rpm: 60, quality: [low, high], mode: turbo}\n"
        "loras: [paint]\n"
        "scales: [0, 0.8]\n"
        "stacks:\n"
        "  - {paint: 0.6, ink: 0.4}\n"
        "prompts:\n  - id: cat\n    text: a cat\n"
        "seeds: [7, 8]\n"
    ))
    grid = expand(suite, lookup=lookup)
    setup = grid.providers["fakeasync"]
    assert (setup.config.concurrency, setup.config.rpm) == (3, 60)
    assert setup.options == {"mode": "turbo"} and setup.axes == {"quality": ["low", "high"]}
    # per quality value: baseline + 2 scales + 1 stack, x 1 prompt x 2 seeds
    assert len(grid.cells) == 2 * 4 * 2
    baselines = [c for c in grid.cells if c.lora == ""]
    assert {(dict(c.axes)["quality"], c.seed) for c in baselines} == {("low", 7), ("low", 8), ("high", 7), ("high", 8)}
    assert all(c.request.loras == () and c.request.prompt == "a cat" for c in baselines)
    assert all(c.request.options["mode"] == "turbo" for c in grid.cells)
    zero = [c for c in grid.cells if c.lora == "paint" and c.scale == 0.0]
    assert zero and all(len(c.request.loras) == 1 and c.request.loras[0].scale == 0.0 for c in zero)
    stack = [c for c in grid.cells if c.lora == "paint+ink"]
    assert stack and stack[0].scales == "0.6+0.4" and stack[0].scale == 0.6
    assert [lora.scale for lora in stack[0].request.loras] == [0.6, 0.4]
    # triggers: prefix for paint, suffix for ink; the prompt as written kept for scoring
    assert stack[0].request.prompt == "p41nt, a cat, 1nk" and stack[0].prompt == "a cat"


def test_scales_default_to_each_loras_recommended(write_suite):
    suite = load_suite(write_suite("name: rec\nproviders: [fakeasync]\nloras: ['tag:style']\nprompts: [a]\n"))
    grid = expand(suite, lookup=lookup)
    assert sorted((c.lora, c.scale) for c in grid.cells if c.lora) == [("ink", 0.8), ("paint", 0.7)]


def test_stack_rules(write_suite):
    with pytest.raises(SuiteError) as info:
        load_suite(write_suite("name: s\nproviders: [fakeasync]\nprompts: [a]\nstacks:\n  - {paint: 0.5}\n"))
    assert "2 to 3 LoRAs" in info.value.problems[0] and ":5:" in info.value.problems[0]
    with pytest.raises(SuiteError) as info:
        load_suite(write_suite(
            "name: s\nproviders: [fakeasync]\nprompts: [a]\nscales: [0.5, 9]\nstacks:\n  - {paint: 0.5, ink: 5}\n"
        ))
    text = "\n".join(info.value.problems)
    assert ":4: scales: scale(s) [9.0] outside [0, 4]" in text
    assert ":6: stacks[0]: scale(s) [5.0] outside [0, 4]" in text


def test_fingerprint_is_canonical_and_sensitive():
    lora = LoraSpec(id="x", scale=0.5, url="https://e/x.safetensors", sha256="c" * 64)
    base = GenerationRequest(prompt="a cat", width=64, height=64, seed=1, steps=2, loras=(lora,), options={"b": 1, "a": 2})
    same = GenerationRequest(prompt="a cat", width=64, height=64, seed=1, steps=2, loras=(lora,), options={"a": 2, "b": 1})
    fp = fingerprint("p", "e", "v", base)
    assert fp == fingerprint("p", "e", "v", same) and len(fp) == 64
    changed = [
        fingerprint("q", "e", "v", base),
        fingerprint("p", "e2", "v", base),
        fingerprint("p", "e", "v2", base),
        fingerprint("p", "e", "v", base.model_copy(update={"seed": 2})),
        fingerprint("p", "e", "v", base.model_copy(update={"prompt": "a dog"})),
        fingerprint("p", "e", "v", base.model_copy(update={"loras": (lora.model_copy(update={"scale": 0.6}),)})),
        fingerprint("p", "e", "v", base.model_copy(update={"loras": (lora.model_copy(update={"sha256": "d" * 64}),)})),
        fingerprint("p", "e", "v", base.model_copy(update={"output_format": "jpeg"})),
        fingerprint("p", "e", "v", base.model_copy(update={"steps": 3})),
    ]
    assert fp not in changed and len(set(changed)) == len(changed)
    # the URL is not the identity when a content hash is known
    moved = base.model_copy(update={"loras": (lora.model_copy(update={"url": "https://mirror/x.safetensors"}),)})
    assert fingerprint("p", "e", "v", moved) == fp


def test_fingerprint_covers_size_count_and_option_values_but_not_transport_options():
    base = GenerationRequest(prompt="a cat", width=64, height=64, seed=1, steps=2, options={"acceleration": "none"})
    fp = fingerprint("fal", "e", "v", base)
    image_changing = [
        base.model_copy(update={"width": 128}),
        base.model_copy(update={"height": 128}),
        base.model_copy(update={"num_images": 2}),
        base.model_copy(update={"options": {"acceleration": "high"}}),
        base.model_copy(update={"options": {"acceleration": "none", "enable_safety_checker": False}}),
    ]
    fps = {fingerprint("fal", "e", "v", r) for r in image_changing}
    assert fp not in fps and len(fps) == len(image_changing)
    # how the image comes back (data URI / base64 instead of a URL) is not what it is
    for transport in ({"sync_mode": True}, {"enable_base64_output": True}):
        inline = base.model_copy(update={"options": {**base.options, **transport}})
        assert fingerprint("fal", "e", "v", inline) == fp


def test_a_local_file_is_resolved_and_hashed_once_per_entry_not_per_scale(write_suite, project, monkeypatch):
    """A local provider needs each LoRA as a verified file: resolving hashes the whole file
    (hundreds of MB for a real LoRA), so a scale sweep must not repeat it per scale."""
    import lorascope.registry.resolve as resolve_mod
    from tests.helpers.harness_fakes import FakeSync

    class FakeLocal(FakeSync):
        name = "fakelocal"
        needs_local_files = True

    (project / "loras").mkdir()
    from safetensors.numpy import save_file
    import numpy as np

    save_file({"x.lora_A.weight": np.zeros((2, 2), dtype=np.float32)}, str(project / "loras" / "one.safetensors"))
    (project / "loras.yaml").write_text(
        "version: 1\nloras:\n  - id: one\n    name: One\n    source: {path: loras/one.safetensors}\n"
        "    kind: style\n    scale: {recommended: 1.0, range: [0.0, 2.0]}\n"
    )
    hashed: list[str] = []
    real = resolve_mod.sha256_file
    monkeypatch.setattr(resolve_mod, "sha256_file", lambda path, *a, **k: (hashed.append(str(path)), real(path, *a, **k))[1])
    suite = load_suite(write_suite(
        "name: sweep\nproviders:\n  - fakelocal: {quality: [low, high]}\nloras: [one]\nscales: [0, 0.5, 1.0, 1.5]\n"
        "prompts: [a cat]\n"
    ))
    grid = expand(suite, lookup=lambda name: FakeLocal)
    painted = [c for c in grid.cells if c.lora == "one"]
    assert len(painted) == 2 * 4
    assert sorted({c.request.loras[0].scale for c in painted}) == [0.0, 0.5, 1.0, 1.5]
    assert all(c.request.loras[0].path and c.request.loras[0].sha256 for c in painted)
    assert len(hashed) == 1


def test_basic_suite_counts(write_suite):
    grid = expand(load_suite(write_suite(BASIC)), lookup=lookup)
    assert len(grid.cells) == (1 + 2 * 2) * 2 * 2


def test_parse_suite_without_file():
    suite = parse_suite("name: inline\nproviders: [fakeasync]\nprompts: [hello]\nsize: 512\n")
    assert suite.prompts[0].id == "p1" and (suite.width, suite.height) == (512, 512)


def test_cli_lists_suite_problems_with_lines_and_exits_1(write_suite, tmp_path):
    from typer.testing import CliRunner

    from lorascope.cli import app

    path = write_suite("name: bad\nproviders: [fakeasync]\nprompts: [a]\nsteps: 0\nsize: 10x\n")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 1
    out = result.output
    assert "nothing was sent" in out
    assert f"{path}:4: steps:" in out and f"{path}:5: size:" in out
    assert not (tmp_path / "r").exists()


def test_fal_starts_at_concurrency_2_unless_the_suite_says_otherwise(monkeypatch, tmp_path):
    from lorascope.harness.runner import build_plan

    monkeypatch.setenv("FAL_KEY", "k-test-000000000")
    plain = parse_suite("name: f\nproviders: [fal, novita]\nprompts: [a]\nsize: 512x512\n")
    plan, _ = build_plan(plain, providers=None, concurrency=None, lookup=None, factory=None, strict=False)
    assert plan.concurrency == {"fal": 2, "novita": 4}
    set_ = parse_suite("name: f\nproviders:\n  - fal: {concurrency: 8}\nprompts: [a]\nsize: 512x512\n")
    plan, _ = build_plan(set_, providers=None, concurrency=None, lookup=None, factory=None, strict=False)
    assert plan.concurrency == {"fal": 8}
    plan, _ = build_plan(plain, providers=["fal"], concurrency=5, lookup=None, factory=None, strict=False)
    assert plan.concurrency == {"fal": 5}
