"""Loading and validating loras.yaml: typed entries, or every problem with file/line/entry/field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lorascope.registry.catalogue import PROJECT_CATALOGUE, default_catalogue_path, load_catalogue
from lorascope.registry.problems import CatalogueError

GOOD_ENTRY = """\
  - id: {id}
    name: {name}
    source:
      repo: owner/{id}
      file: {id}.safetensors
    kind: style
    triggers: [trig-{id}]
    scale: {{recommended: 0.7, range: [0.5, 1.0]}}
    style_prompt: a watercolor painting
    tags: [demo]
"""


def write(tmp_path: Path, body: str, name: str = "loras.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def line_no(path: Path, needle: str, nth: int = 1) -> int:
    hits = [i + 1 for i, line in enumerate(lines_of(path)) if needle in line]
    return hits[nth - 1]


def test_shipped_catalogue_validates_with_every_notes_lora() -> None:
    cat = load_catalogue(PROJECT_CATALOGUE)
    # the one warning: re-turbo's file is named by no source (verify --write fills it)
    assert [(w.entry, w.field) for w in cat.warnings] == [("re-turbo", "source.file")]
    ids = cat.ids
    assert ids[:9] == ["classic-painting", "coloring-book", "childrens-drawings", "technically-color", "realism",
                       "historic-color", "panyue", "re-turbo", "training-adapter"]
    assert ids[9:13] == ["pixel-art", "saturday-morning", "tarot", "pencil-sketch"]
    classic = cat.get("classic-painting")
    assert classic.source.repo == "renderartist/Classic-Painting-Z-Image-Turbo-LoRA"
    assert classic.source.file == "Classic_Painting_Z_Image_Turbo_v1_renderartist_1750.safetensors"
    assert classic.triggers == ["class1cpa1nt"] and classic.scale.range == (0.5, 0.8)
    assert cat.get("coloring-book").triggers == ["c0l0ringb00k"] and cat.get("coloring-book").scale.recommended == 0.7
    assert cat.get("panyue").triggers == ["Panyue", "潘悦"]
    assert cat.get("tarot").triggers == ["trtcrd"]
    assert cat.get("saturday-morning").triggers == ["saturd4ym0rning"]
    for entry in cat.entries:
        assert "source" in entry.provenance, entry.id
        # nothing was checked against the LoRAs' own repos: nothing may claim it was
        assert not any(p.confirmed or p.state == "confirmed" for p in entry.provenance.values()), entry.id


def test_every_rule_reported_at_once_with_file_line_entry_field(tmp_path: Path) -> None:
    long_prompt = " ".join(["extraordinarily"] * 40)
    path = write(tmp_path, f"""\
        verison: 1
        loras:
          - id: classic-painting
            name: Classic
            source:
              repo: not a repo
              file: model.ckpt
            kind: stlye
            triggers: ["class1cpa1nt", "  "]
            scale: {{recommended: 0.9, range: [0.5, 0.8]}}
            style_prompt: {long_prompt}
            tagz: [x]
          - id: classic-painting
            name: Dupe
            source:
              url: https://example.com/lora.safetensors
              sha256: ABC
            kind: style
            scale: {{recommended: 5, range: [-1, 4.5]}}
          - id: Bad_Id
            source: {{path: weights.bin}}
            kind: style
            scale: {{recommended: 1, range: [0, 1]}}
        """)
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    problems = info.value.problems
    text = str(info.value)
    got = {(p.line, p.entry, p.field) for p in problems}

    assert (1, None, None) in got  # top-level typo
    assert "unknown key 'verison'; did you mean 'version'?" in text
    assert (line_no(path, "repo: not a repo"), "classic-painting", "source.repo") in got
    assert (line_no(path, "file: model.ckpt"), "classic-painting", "source.file") in got
    assert (line_no(path, "kind: stlye"), "classic-painting", "kind") in got
    assert (line_no(path, "triggers:"), "classic-painting", "triggers") in got
    assert (line_no(path, "scale: {recommended: 0.9"), "classic-painting", "scale.recommended") in got
    assert (line_no(path, "tagz"), "classic-painting", "tagz") in got
    assert "unknown key 'tagz'; did you mean 'tags'?" in text
    assert (line_no(path, "- id: classic-painting", 2), "classic-painting", "id") in got
    assert f"duplicate id 'classic-painting' (first defined at line {line_no(path, '- id: classic-painting')})" in text
    assert (line_no(path, "sha256: ABC"), "classic-painting", "source.sha256") in got
    assert (line_no(path, "scale: {recommended: 5"), "classic-painting", "scale.recommended") in got
    assert (line_no(path, "scale: {recommended: 5"), "classic-painting", "scale.range") in got
    assert (line_no(path, "- id: Bad_Id"), "Bad_Id", "id") in got
    assert (line_no(path, "- id: Bad_Id"), "Bad_Id", "name") in got  # missing field
    assert (line_no(path, "source: {path: weights.bin}"), "Bad_Id", "source.path") in got

    pickle = [p for p in problems if p.field == "source.file"][0]
    assert "pickle" in pickle.message and pickle.severity == "error"
    warning = [p for p in problems if p.field == "style_prompt"][0]
    assert warning.severity == "warning" and "77" in warning.message
    # the message format users see: file:line: entry 'id', field 'x': message
    assert f"loras.yaml:{line_no(path, 'scale: {recommended: 5')}: entry 'classic-painting', field 'scale.range': " in text
    assert "outside [0, 4]" in text
    assert "recommended 0.9 is outside its range [0.5, 0.8]" in text
    assert len([p for p in problems if p.severity == "error"]) >= 15


def test_warning_does_not_raise_but_rides_on_catalogue(tmp_path: Path) -> None:
    body = "loras:\n" + GOOD_ENTRY.format(id="one", name="One").replace(
        "a watercolor painting", " ".join(["supercalifragilistic"] * 20))
    cat = load_catalogue(write(tmp_path, body))
    assert [w.field for w in cat.warnings] == ["style_prompt"]
    assert cat.warnings[0].severity == "warning" and cat.warnings[0].line == 10
    assert "warning:" in str(cat.warnings[0])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{repo: a/b, url: 'https://x.org/y.safetensors', file: y.safetensors}", "exactly one of"),
        ("{file: y.safetensors}", "needs exactly one of"),
        ("{repo: a/b, file: notes.txt}", "not a .safetensors file"),
        ("{repo: a/b, file: y.safetensors, revision: 'bad rev!'}", "not a git revision"),
        ("{repo: a/b, file: y.safetensors, fille: z}", "did you mean 'file'?"),
        ("{url: 'https://x.org/y.pt', sha256: " + "a" * 64 + "}", "pickle"),
        ("{url: 'ftp://x.org/y.safetensors', sha256: " + "a" * 64 + "}", "not an http(s) URL"),
    ],
)
def test_source_rules(tmp_path: Path, source: str, message: str) -> None:
    path = write(tmp_path, f"""\
        loras:
          - id: x
            name: X
            source: {source}
            kind: style
            scale: {{recommended: 1, range: [0, 1]}}
        """)
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    (problem,) = info.value.problems
    assert problem.line == 4 and problem.entry == "x" and problem.field.startswith("source")
    assert message in problem.message


def test_provenance_rules(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        loras:
          - id: x
            name: X
            source: {repo: a/b, file: y.safetensors}
            kind: style
            scale: {recommended: 1, range: [0, 1]}
            provenance:
              triggers: {source: card, confirmd: true}
              colour: {source: card}
        """)
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    by_field = {p.field: p for p in info.value.problems}
    assert by_field["provenance.triggers.confirmd"].line == 8
    assert "did you mean 'confirmed'?" in by_field["provenance.triggers.confirmd"].message
    assert by_field["provenance.colour"].line == 9 and "unknown fact; known keys: name" in by_field["provenance.colour"].message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "loras:\n  - id: x\n    name: [unclosed\n    kind: style\n")
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    (problem,) = info.value.problems
    assert problem.line is not None and problem.line >= 3 and "invalid YAML" in problem.message


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="must be a mapping"):
        load_catalogue(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(CatalogueError, match="not found"):
        load_catalogue(tmp_path / "nope.yaml")
    with pytest.raises(CatalogueError, match="an entry must be a mapping"):
        load_catalogue(write(tmp_path, "loras:\n  - just a string\n", "b.yaml"))


def test_get_and_select(tmp_path: Path) -> None:
    body = "loras:\n" + "".join(GOOD_ENTRY.format(id=i, name=i) for i in ("alpha", "beta", "gamma"))
    body = body.replace("tags: [demo]", "tags: [demo, x]", 1)
    cat = load_catalogue(write(tmp_path, body))
    assert cat.get("beta").name == "beta"
    with pytest.raises(KeyError) as info:
        cat.get("betta")
    assert "did you mean 'beta'" in str(info.value)
    assert [e.id for e in cat.select(["gamma", "alpha"])] == ["alpha", "gamma"]  # catalogue order
    assert [e.id for e in cat.select(["all"])] == ["alpha", "beta", "gamma"]
    assert [e.id for e in cat.select(["tag:x", "alpha"])] == ["alpha"]
    assert [e.id for e in cat.select(["tag:demo"])] == ["alpha", "beta", "gamma"]
    with pytest.raises(KeyError, match="has tag 'dem'; did you mean tag:demo"):
        cat.select(["tag:dem"])
    assert cat.lines == {"alpha": 2, "beta": 12, "gamma": 22}


def test_default_catalogue_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_catalogue_path() == PROJECT_CATALOGUE
    (tmp_path / "loras.yaml").write_text("loras: []\n")
    assert default_catalogue_path() == tmp_path / "loras.yaml"
    monkeypatch.setenv("LORASCOPE_CATALOGUE", str(tmp_path / "other.yaml"))
    assert default_catalogue_path() == tmp_path / "other.yaml"
    assert load_catalogue(tmp_path / "loras.yaml").entries == []
