"""Hostile YAML (issue 19): alias bombs, deep nesting, huge files and huge grids in suites
and catalogues end in one pointed error (file, line, why), quickly, with nothing sent."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from lorascope.cli import app
from lorascope.harness.grid import expand
from lorascope.harness.suite import SuiteError, load_suite
from lorascope.registry import safe_yaml
from lorascope.registry.catalogue import check_catalogue
from tests.helpers.harness_fakes import FakeAsync, lookup

runner = CliRunner()


def billion_laughs(key: str = "x") -> str:
    """Nine levels of nine aliases each: ~400 bytes, 10^9 strings once expanded."""
    lines = [f'{key}0: &{key}0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"{key}{i}: &{key}{i} [" + ",".join([f"*{key}{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def deep(levels: int) -> str:
    return "\n".join("  " * i + f"k{i}:" for i in range(levels)) + " 1\n"


SUITE_HEAD = "name: hostile\nproviders: [fakeasync]\nprompts: [a fox]\n"


@pytest.mark.parametrize("body, line, words", [
    (billion_laughs("b"), 9, "expands to more than"),
    (deep(300), 43, "nested more than"),
    ("seeds: " + "[" * 3000 + "]" * 3000 + "\n", 4, "nested more than"),
])
def test_suite_yaml_limits_are_pointed_errors(write_suite, body, line, words):
    path = write_suite(SUITE_HEAD + body)
    started = time.monotonic()
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert time.monotonic() - started < 10
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:{line}: ") and words in problem, problem


def test_an_oversized_suite_is_refused_without_reading_it(write_suite):
    path = write_suite(SUITE_HEAD + "# " + "x" * (safe_yaml.MAX_BYTES + 10) + "\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(path) in info.value.problems[0] and "the limit is 2,097,152" in info.value.problems[0]


def test_a_few_aliases_still_load(write_suite):
    path = write_suite(SUITE_HEAD + "seeds: &s [1, 2]\nsize: 64x64\nscales: [0.5]\n")
    assert load_suite(path).seeds == [1, 2]


@pytest.mark.parametrize("text, line, words", [
    ("version: 1\n" + billion_laughs("c") + "loras: []\n", 7, "expands to more than"),
    ("version: 1\nloras:\n" + "  " + "- " * 500 + "x\n", 3, "nested more than"),
])
def test_catalogue_yaml_limits_are_problems_with_the_line(tmp_path, text, line, words):
    path = tmp_path / "loras.yaml"
    path.write_text(text)
    entries, problems, _ = check_catalogue(path)
    assert entries == []
    (problem,) = problems
    assert problem.line == line and words in problem.message and problem.file == path


def test_a_non_utf8_catalogue_is_a_problem(tmp_path):
    path = tmp_path / "loras.yaml"
    path.write_bytes(b"version: 1\nloras: []\n# \xff\xfe\n")
    _, (problem,), _ = check_catalogue(path)
    assert "not UTF-8" in problem.message


# -- the grid cap -------------------------------------------------------------------------------


def test_a_grid_over_the_cap_is_refused_before_it_is_built(write_suite):
    seeds = ", ".join(str(i) for i in range(1000))
    prompts = ", ".join(f"p{i}" for i in range(101))
    path = write_suite(f"name: big\nproviders: [fakeasync]\nprompts: [{prompts}]\nseeds: [{seeds}]\nloras: []\n")
    suite = load_suite(path)
    started = time.monotonic()
    with pytest.raises(SuiteError) as info:
        expand(suite, lookup=lookup)
    assert time.monotonic() - started < 5
    (problem,) = info.value.problems
    assert "101,000 cells" in problem and "the limit is 100,000" in problem and str(path) in problem
    # under the cap (by the keyword), the same suite expands
    assert len(expand(suite, lookup=lookup, max_cells=101_000).cells) == 101_000
    assert FakeAsync.calls == []


def test_dry_run_of_a_huge_grid_says_how_many_cells_and_why(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)
    seeds = ", ".join(str(i) for i in range(4000))
    prompts = ", ".join(f"p{i}" for i in range(100))
    (project / "big.yaml").write_text(
        f"name: big\nproviders: [fal, novita]\nprompts: [{prompts}]\nseeds: [{seeds}]\n"
        "scales: [0.5, 0.6, 0.7, 0.8, 0.9]\nloras: [paint, ink]\n")
    result = runner.invoke(app, ["run", "big.yaml", "--dry-run", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "8,800,000 cells" in text and "11 LoRA setting(s)" in text and "the limit is 100,000" in text
    assert "big.yaml" in text and "Traceback" not in text
    assert not (tmp_path / "r").exists()


# -- the smaller items: decimals, booleans, escapes, empty files ---------------------------------


def test_suite_numbers_refuse_decimals_and_booleans(write_suite):
    path = write_suite(SUITE_HEAD + "size: {width: 512.5, height: 512}\nscales: [true, 0.5]\nseeds: [true]\n"
                       "num_images: true\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    text = "\n".join(info.value.problems)
    assert f"{path}:4: size: '512.5x512' is not a size like 1024x1024" in text
    assert f"{path}:5: scales:" in text and f"{path}:6: seeds:" in text and f"{path}:7: num_images:" in text
    assert text.count("true/false is not a number") == 3
    with pytest.raises(SuiteError, match="1000.5 is not a size"):
        load_suite(write_suite(SUITE_HEAD + "size: 1000.5\n"))


def test_an_escape_sequence_in_a_prompt_or_a_catalogue_name_is_refused(write_suite, tmp_path):
    path = write_suite(SUITE_HEAD.replace("[a fox]", '["a fox \\e[2J\\e[31m"]'))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert info.value.problems == [f"{path}:3: a value holds the control character U+001B (a terminal escape "
                                   "sequence?); remove it: it would reach terminals, reports and provider requests"]
    catalogue = tmp_path / "c.yaml"
    catalogue.write_text('version: 1\nloras:\n  - id: x\n    name: "evil \\x9b31m"\n')
    _, (problem,), _ = check_catalogue(catalogue)
    assert problem.line == 4 and "U+009B" in problem.message


def test_a_boolean_catalogue_scale_is_an_error_not_a_silently_dropped_entry(tmp_path):
    path = tmp_path / "loras.yaml"
    path.write_text("version: 1\nloras:\n  - id: x\n    name: X\n    source: {url: 'https://e.test/x.safetensors', "
                    "sha256: '" + "a" * 64 + "'}\n    kind: style\n    scale: {recommended: true, range: [0.5, 0.9]}\n")
    entries, problems, _ = check_catalogue(path)
    assert entries == []
    assert [(p.line, p.field, p.severity) for p in problems] == [(7, "scale.recommended", "error")]
    assert "True is not a number" in problems[0].message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "version: 1\n"])
def test_an_empty_catalogue_is_an_error(tmp_path, text):
    path = tmp_path / "loras.yaml"
    path.write_text(text)
    _, problems, _ = check_catalogue(path)
    assert [p.severity for p in problems] == ["error"] and problems[0].file == path


def test_a_missing_catalogue_names_the_suite_line(write_suite):
    path = write_suite(SUITE_HEAD + "catalogue: nowhere/loras.yaml\nloras: [paint]\n")
    with pytest.raises(SuiteError) as info:
        expand(load_suite(path), lookup=lookup)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:4: catalogue: ") and "nowhere/loras.yaml not found" in problem


def test_a_path_source_outside_the_catalogue_folder_is_warned_about(tmp_path):
    folder = tmp_path / "cat"
    folder.mkdir()
    path = folder / "loras.yaml"
    entry = ("  - id: {id}\n    name: N\n    source: {{path: '{p}'}}\n    kind: style\n"
             "    scale: {{recommended: 0.7, range: [0.5, 0.9]}}\n")
    path.write_text("version: 1\nloras:\n" + entry.format(id="inside", p="weights/a.safetensors")
                    + entry.format(id="up", p="../../elsewhere/b.safetensors")
                    + entry.format(id="absolute", p="/etc/c.safetensors"))
    entries, problems, _ = check_catalogue(path)
    assert [e.id for e in entries] == ["inside", "up", "absolute"]  # a warning, not an error
    assert [(p.entry, p.field, p.severity) for p in problems] == [
        ("up", "source.path", "warning"), ("absolute", "source.path", "warning")]
    assert "outside the catalogue's folder" in problems[0].message
