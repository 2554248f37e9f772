"""Fuzz (issue 19): a few hundred generated malformed catalogues and suites, fed to the real
commands (`registry validate`, `generate`, `run`) with a loopback fal that would take any
request. Every case carries at least one defect by construction, plus random noise; each
must end in exit 1 or 2 with a message naming the file, no traceback, and nothing sent.

Seeded (random.Random), so a failure names a case that can be replayed: the assertion
message holds the seed and the file's text.
"""

from __future__ import annotations

import random
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lorascope.cli import app  # noqa: E402
from tests.fakes import TEST_KEY, FalFake  # noqa: E402

CASES_EACH = 150  # catalogues, and as many suites

CATALOGUE = textwrap.dedent("""\
    version: 1
    loras:
      - id: coloring-book
        name: Coloring Book
        source:
          repo: renderartist/Coloring-Book-Z-Image-Turbo-LoRA
          file: Coloring_Book.safetensors
          revision: v1
        kind: style
        triggers: [c0l0ringb00k]
        scale: {recommended: 0.7, range: [0.5, 0.9]}
      - id: classic-painting
        name: Classic Painting
        source:
          repo: renderartist/Classic-Painting-Z-Image-Turbo-LoRA
          file: Classic_Painting.safetensors
          revision: v1
        kind: style
        triggers: [class1cpa1nt]
        scale: {recommended: 0.6, range: [0.5, 0.8]}
    """)

SUITE = textwrap.dedent("""\
    name: fuzz
    catalogue: loras.yaml
    providers: [fal]
    loras: [coloring-book, classic-painting]
    scales: [0.5, 0.8]
    prompts:
      - id: fox
        text: a fox in a forest
    seeds: [1, 2]
    size: 512x512
    steps: 8
    """)


def _bomb() -> str:
    lines = ['b0: &b0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"b{i}: &b{i} [" + ",".join([f"*b{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def _replace(old: str, new: str) -> Callable[[str, random.Random], str]:
    def apply(text: str, rng: random.Random) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return apply


def _insert_line(line: str) -> Callable[[str, random.Random], str]:
    def apply(text: str, rng: random.Random) -> str:
        lines = text.splitlines()
        at = rng.randrange(min(1, len(lines)), len(lines) + 1)
        return "\n".join(lines[:at] + [line] + lines[at:]) + "\n"
    return apply


def _append(extra: str) -> Callable[[str, random.Random], str]:
    return lambda text, rng: text + extra


#: Defects every case draws from: each makes the file invalid whatever else is done to it.
COMMON_DEFECTS: dict[str, Callable[[str, random.Random], str]] = {
    "unbalanced bracket": _insert_line("broken: [1, 2"),
    "tab indentation": _insert_line("\tname: tabbed"),
    "alias bomb": _append(_bomb()),
    "deep nesting": _append("deep: " + "[" * 200 + "]" * 200 + "\n"),
    "control escape": _append('extra_text: "red \\e[31m alert"\n'),
    "not a mapping": lambda text, rng: "- " + "\n- ".join(text.splitlines()[:3]) + "\n",
    "empty document": lambda text, rng: rng.choice(["", "---\n", "# nothing\n", "null\n"]),
    "unknown alias": _append("oops: *nowhere\n"),
    "duplicate key": lambda text, rng: text + (text.splitlines() or ["version: 1", "version: 2"])[0] + "\n" + (text.splitlines() or ["", "version: 2"])[0] + "\n",
    "binary junk": lambda text, rng: text + "\n" + "".join(chr(rng.randrange(0x80, 0x9f)) for _ in range(4)) + "\n",
}

CATALOGUE_DEFECTS = {
    **COMMON_DEFECTS,
    "unknown entry field": _replace("    kind: style\n", "    kind: style\n    colour: blue\n"),
    "scale is a word": _replace("recommended: 0.7", "recommended: high"),
    "scale is a boolean": _replace("recommended: 0.7", "recommended: true"),
    "range reversed": _replace("range: [0.5, 0.9]", "range: [0.9, 0.5]"),
    "duplicate id": _replace("id: classic-painting", "id: coloring-book"),
    "pickle weights": _replace("Coloring_Book.safetensors", "Coloring_Book.ckpt"),
    "entry is a string": _replace("  - id: classic-painting", "  - just a string\n  - id: classic-painting"),
    "loras not a list": _replace("loras:\n", "loras: 5\nold_loras:\n"),
    "source missing": _replace("    source:\n      repo: renderartist/Coloring", "    sauce:\n      repo: renderartist/Coloring"),
    "unknown kind": _replace("kind: style\n", "kind: 42\n"),
}

SUITE_DEFECTS = {
    **COMMON_DEFECTS,
    "unknown field": _insert_line("colour: blue"),
    "size is a word": _replace("size: 512x512", "size: huge"),
    "size is a decimal": _replace("size: 512x512", "size: 512.5x512"),
    "size decimal number": _replace("size: 512x512", "size: 1000.5"),
    "negative seed": _replace("seeds: [1, 2]", "seeds: [1, -2]"),
    "boolean seed": _replace("seeds: [1, 2]", "seeds: [yes, 2]"),
    "boolean scale": _replace("scales: [0.5, 0.8]", "scales: [true, 0.8]"),
    "scale out of range": _replace("scales: [0.5, 0.8]", "scales: [0.5, 99]"),
    "steps zero": _replace("steps: 8", "steps: 0"),
    "steps decimal": _replace("steps: 8", "steps: 7.5"),
    "unknown provider": _replace("providers: [fal]", "providers: [fal, nosuch-provider]"),
    "unknown lora": _replace("loras: [coloring-book, classic-painting]", "loras: [coloring-bok]"),
    "id:scale lora": _replace("loras: [coloring-book, classic-painting]", "loras: ['coloring-book:abc']"),
    "prompts not a list": _replace("prompts:\n  - id: fox\n    text: a fox in a forest\n", "prompts: 5\n"),
    "empty prompt": _replace("text: a fox in a forest", "text: ''"),
    "missing catalogue": _replace("catalogue: loras.yaml", "catalogue: nowhere/loras.yaml"),
    # 5 LoRA settings x 60 prompts x 400 seeds = 120,000 cells, past the cap
    "huge grid": lambda text, rng: _replace("seeds: [1, 2]", "seeds: [" + ", ".join(map(str, range(400))) + "]")(
        _replace("prompts:\n  - id: fox\n    text: a fox in a forest\n",
                 "prompts: [" + ", ".join(f"p{i}" for i in range(60)) + "]\n")(text, rng), rng),
    "bad name": _replace("name: fuzz", "name: ../../etc"),
}

NOISE = [
    _insert_line("# a comment the fuzzer added"),
    lambda text, rng: text.replace("\n", "\n\n", 1),
    lambda text, rng: text + "\n",
    lambda text, rng: text.replace("\n", "\r\n") if rng.random() < 0.5 else text,
]


def mutate(base: str, defects: dict, rng: random.Random) -> tuple[str, list[str]]:
    names = rng.sample(sorted(defects), k=rng.choice([1, 1, 2, 3]))
    text, applied = base, []
    for name in names:
        try:
            changed = defects[name](text, rng)
        except AssertionError:  # an earlier defect removed what this one edits: keep the others
            continue
        if changed != text:
            text = changed
            applied.append(name)
    if not applied:
        text = COMMON_DEFECTS["unbalanced bracket"](text, rng)
        applied.append("unbalanced bracket")
    for _ in range(rng.randrange(0, 3)):
        text = rng.choice(NOISE)(text, rng)
    return text, applied


@pytest.fixture(scope="module")
def fal():
    with FalFake(key=TEST_KEY) as fake:
        yield fake


@pytest.fixture
def env(fal, monkeypatch, tmp_path):
    monkeypatch.setenv("FAL_KEY", TEST_KEY)
    monkeypatch.setenv("LORASCOPE_FAL_URL", fal.url)
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LORASCOPE_CATALOGUE", raising=False)
    monkeypatch.chdir(tmp_path)
    return fal


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _check(result, path: Path, where: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{where}: {type(result.exception).__name__}: {result.exception}")
    assert result.exit_code in (1, 2), f"{where}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output, f"{where}\n{result.output}"
    assert path.name in result.output.replace("\n", ""), f"{where}: the file is not named\n{result.output}"


@pytest.mark.parametrize("base, defects", [(CATALOGUE, CATALOGUE_DEFECTS), (SUITE, SUITE_DEFECTS)])
def test_every_defect_changes_the_base_it_is_drawn_for(base, defects):
    rng = random.Random(0)
    for name, defect in defects.items():
        assert defect(base, rng) != base, name


def test_the_unmutated_inputs_are_valid_and_would_be_sent(env, tmp_path):
    """The control: without defects the same commands pass and the fake is asked, so the
    fuzz's 'nothing sent' is a real check."""
    (tmp_path / "loras.yaml").write_text(CATALOGUE)
    (tmp_path / "suite.yaml").write_text(SUITE)
    assert invoke("registry", "validate", "loras.yaml").exit_code == 0
    before = len(env.hits("submit"))
    result = invoke("run", "suite.yaml", "--out", str(tmp_path / "r"), "--no-progress")
    assert result.exit_code == 0, result.output
    assert len(env.hits("submit")) - before == (1 + 2 * 2) * 2


def test_malformed_catalogues(env, tmp_path):
    rng = random.Random(19_001)
    (tmp_path / "suite.yaml").write_text(SUITE)
    before = len(env.requests)
    for case in range(CASES_EACH):
        text, names = mutate(CATALOGUE, CATALOGUE_DEFECTS, rng)
        path = tmp_path / "loras.yaml"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        where = f"catalogue case {case} ({', '.join(names)}):\n{text[:600]}"
        _check(invoke("registry", "validate", "loras.yaml"), path, where)
        if case % 3 == 0:  # the same file reached through generate and run: refused before sending
            _check(invoke("generate", "--provider", "fal", "--lora", "coloring-book", "--seed", "1",
                          "--catalogue", "loras.yaml", "a fox", "-o", str(tmp_path / "o.png")), path, where)
            _check(invoke("run", "suite.yaml", "--out", str(tmp_path / f"r{case}"), "--no-progress"), path, where)
    assert len(env.requests) == before, "a malformed catalogue let a request through"


def test_malformed_suites(env, tmp_path):
    rng = random.Random(19_002)
    (tmp_path / "loras.yaml").write_text(CATALOGUE)
    before = len(env.requests)
    for case in range(CASES_EACH):
        text, names = mutate(SUITE, SUITE_DEFECTS, rng)
        path = tmp_path / "suite.yaml"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        where = f"suite case {case} ({', '.join(names)}):\n{text[:600]}"
        dry = case % 2 == 0
        result = invoke("run", "suite.yaml", "--out", str(tmp_path / f"r{case}"), "--no-progress",
                        *(["--dry-run"] if dry else []))
        _check(result, path, where)
        assert not (tmp_path / f"r{case}" / "run.db").exists(), where
    assert len(env.requests) == before, "a malformed suite let a request through"
