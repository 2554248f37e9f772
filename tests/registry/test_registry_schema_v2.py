"""Schema version 2 (a state and a URL per fact, alternatives, new kinds) beside version 1, and
the shipped catalogue's corrections from the LoRAs' own pages and public LoRA lists."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lorascope.registry.catalogue import PROJECT_CATALOGUE, load_catalogue
from lorascope.registry.problems import CatalogueError
from lorascope.registry.references import UnknownFileError, references

DLC = "https://github.com/huntengu/Z-Image-Turbo-LoRA-DLC/blob/81302855d33cd9c93d82e0f80f9616ced2b1544c/app.py"

V1 = """\
version: 1
loras:
  - id: ink
    name: Ink
    source: {repo: owner/ink, file: ink.safetensors}
    kind: style
    triggers: [inkk]
    scale: {recommended: 0.7, range: [0.5, 1.0]}
    provenance:
      triggers: {source: model card, confirmed: true}
      scale: {source: forum post, confirmed: false, note: 0.7 seen}
"""

V2 = """\
version: 2
loras:
  - id: ink
    name: Ink
    source: {repo: owner/ink, file: ink.safetensors}
    kind: slider
    triggers: [inkk]
    scale: {recommended: 3, range: [2, 4]}
    license: mit
    provenance:
      source: {state: secondary, source: DLC list, url: "https://example.org/list"}
      kind: {state: unverified, source: lorascope}
      triggers:
        state: confirmed
        source: the card
        url: "https://huggingface.co/owner/ink"
        alternatives:
          - {value: [ink style], source: DLC list, url: "https://example.org/list"}
      scale: {state: secondary, source: the card, url: "https://huggingface.co/owner/ink"}
      license: {state: confirmed, source: the card, url: "https://huggingface.co/owner/ink"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "loras.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_version_1_file_loads_unchanged_with_states_derived(tmp_path: Path) -> None:
    cat = load_catalogue(write(tmp_path, V1))
    ink = cat.get("ink")
    assert cat.version == 1 and cat.warnings == []
    assert ink.is_confirmed("triggers") and ink.state("triggers") == "confirmed"
    assert not ink.is_confirmed("scale") and ink.state("scale") == "unverified"
    assert ink.provenance["scale"].note == "0.7 seen"
    assert ink.state("kind") == "unverified"  # no provenance at all


def test_version_1_still_requires_a_hub_file(tmp_path: Path) -> None:
    path = write(tmp_path, V1.replace("source: {repo: owner/ink, file: ink.safetensors}", "source: {repo: owner/ink}"))
    with pytest.raises(CatalogueError) as exc:
        load_catalogue(path)
    assert "loras.yaml:5: entry 'ink', field 'source.file': required field is missing" in str(exc.value)


def test_version_2_states_urls_and_alternatives(tmp_path: Path) -> None:
    cat = load_catalogue(write(tmp_path, V2))
    ink = cat.get("ink")
    assert cat.version == 2 and cat.warnings == []
    assert ink.kind == "slider" and ink.license == "mit"
    assert ink.state("source") == "secondary" and not ink.is_confirmed("source")
    assert ink.state("triggers") == "confirmed" and ink.is_confirmed("triggers")
    alt = ink.provenance["triggers"].alternatives[0]
    assert alt.value == ["ink style"] and alt.source == "DLC list" and alt.url == "https://example.org/list"


def test_version_2_rules_reported_all_at_once(tmp_path: Path) -> None:
    bad = (V2.replace("      kind: {state: unverified, source: lorascope}\n", "")
             .replace("{state: secondary, source: the card, url: \"https://huggingface.co/owner/ink\"}",
                      "{state: secondary, source: the card}")
             .replace("license: {state: confirmed,", "license: {confirmed: true, state: confirmed,")
             .replace("- {value: [ink style], source: DLC list,", "- {value: [ink style], sauce: DLC list,"))
    with pytest.raises(CatalogueError) as exc:
        load_catalogue(write(tmp_path, bad))
    text = str(exc.value)
    assert "field 'provenance.scale.url': a secondary fact needs the URL it was read from" in text
    assert "field 'provenance.license.confirmed': version 2 says `state: confirmed|secondary|unverified`" in text
    assert "field 'provenance': no source given for: kind" in text
    assert "unknown key 'sauce'; did you mean 'source'?" in text
    unknown = write(tmp_path, V2.replace("version: 2", "version: 3"))
    with pytest.raises(CatalogueError) as exc:
        load_catalogue(unknown)
    assert "field 'version': unknown schema version 3; this lorascope reads versions 1, 2" in str(exc.value)


def test_version_2_unknown_file_is_a_warning_and_refused_by_references(tmp_path: Path) -> None:
    path = write(tmp_path, V2.replace("source: {repo: owner/ink, file: ink.safetensors}", "source: {repo: owner/ink}"))
    cat = load_catalogue(path)
    assert [(w.entry, w.field, w.severity) for w in cat.warnings] == [("ink", "source.file", "warning")]
    with pytest.raises(UnknownFileError, match="registry verify ink --write"):
        references(cat.get("ink"), cat.dir)


def test_shipped_catalogue_is_grown_and_corrected() -> None:
    cat = load_catalogue(PROJECT_CATALOGUE)
    assert cat.version == 2 and len(cat.entries) >= 30
    pixel = cat.get("pixel-art")
    assert pixel.source.file == "pixel_art_style_z_image_turbo.safetensors" and pixel.triggers == ["Pixel art style."]
    pencil = cat.get("pencil-sketch")
    assert pencil.source.file == "Zimage_pencil_sketch.safetensors" and pencil.triggers == ["pencil sketch"]
    saturday = cat.get("saturday-morning")
    assert saturday.source.file.endswith("_1250.safetensors")
    assert [a.value for a in saturday.provenance["source"].alternatives] == [
        "Saturday_Morning_Z_Image_Turbo_v1_renderartist_1500.safetensors"]
    assert cat.get("tarot").source.file == "tarot-z-image_000001250.safetensors"
    historic = cat.get("historic-color")
    assert historic.triggers == ["HST photo"] and historic.source.file == "ZImage1HST_000004000.safetensors"
    assert [a.value for a in historic.provenance["triggers"].alternatives] == [["HST style"]]
    assert cat.get("re-turbo").source.file is None  # no source names it: not guessed
    # AI/ML API's page names triggers only for realism and panyue: nobody else credits it for one
    for entry in cat.entries:
        p = entry.provenance["triggers"]
        if entry.id not in ("realism", "panyue") and "AIML" in p.source:
            assert "no trigger" in p.source, entry.id
    kinds = {e.id: e.kind for e in cat.entries}
    assert kinds["training-adapter"] == kinds["training-adapter-v1"] == "training-adapter"
    assert kinds["re-turbo"] == "speed" and kinds["dejpeg"] == "restoration"
    assert kinds["cinematic-slider"] == "slider" and kinds["panyue"] == "character"
    for entry in cat.entries:
        for fact in ("source", "kind", "triggers", "scale"):
            record = entry.provenance[fact]
            assert record.state in ("secondary", "unverified"), (entry.id, fact)
            assert record.url or record.state == "unverified", (entry.id, fact)
    assert cat.get("pixel-art").provenance["triggers"].url == DLC


def test_show_prints_each_facts_state_url_and_disagreeing_sources() -> None:
    from typer.testing import CliRunner

    from lorascope.registry.cli import app

    result = CliRunner().invoke(app, ["show", "historic-color", "-c", str(PROJECT_CATALOGUE)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "triggers          HST photo  secondary~ — card instance_prompt" in out
    assert "https://huggingface.co/AlekseyCalvin/HistoricColor_Z-image-Turbo-LoRA" in out
    assert "disagrees: HST style — DLC LoRA list (" + DLC + ")" in out
    assert "disagrees: ZImage1HST.safetensors — RGH LoRA list" in out
    unknown = CliRunner().invoke(app, ["show", "re-turbo", "-c", str(PROJECT_CATALOGUE)], env={"COLUMNS": "300"})
    assert unknown.exit_code == 0, unknown.output
    assert "GuangyuanSD/Z-Image-Re-Turbo-LoRA:(file unknown)" in unknown.stdout
    assert "registry verify re-turbo --write" in unknown.stdout


def test_recommend_write_keeps_a_version_2_catalogue_valid(tmp_path: Path) -> None:
    """`lorascope recommend --write` edits provenance.scale in the catalogue's own schema."""
    from lorascope.evals.recommend import Recommendation, write_recommendations

    path = write(tmp_path, V2)
    rec = Recommendation(lora="ink", provider="fal", basis="style_shift", scale=3.5, catalogue_scale=3.0,
                         catalogue_range=(2.0, 4.0), baseline_clip_score=0.3, reason="largest effect below the drift limit")
    assert write_recommendations(path, [rec], run_dir=Path("runs/x"), clip_label="ViT-B-32:openai",
                                 today="2026-12-02") == ["ink"]
    ink = load_catalogue(path).get("ink")
    assert ink.scale.recommended == 3.5 and ink.state("scale") == "unverified"
    assert "runs/x" in ink.provenance["scale"].source and "confirmed:" not in path.read_text()
