"""The scale recommendation rule and the in-place catalogue write."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lorascope.evals.recommend import recommend_scales, write_recommendations
from lorascope.registry.models import LoraEntry


def entry(lora_id="ink", style_prompt="an ink drawing", recommended=0.8, rng=(0.25, 1.5)):
    return LoraEntry(id=lora_id, name=lora_id, source={"type": "path", "path": f"{lora_id}.safetensors"},
                     kind="style", scale={"recommended": recommended, "range": rng}, style_prompt=style_prompt)


def frame(points, base_clip=0.80, provider="fal", lora="ink", n=4):
    """points: {scale: (style_shift, clip_score, lora_effect)}; n images each."""
    rows = [dict(provider=provider, lora="", scale=float("nan"), scales="", prompt_id="p", seed=i, status="succeeded",
                 image_path=f"b{i}.png", image_sha256=f"b{i}{provider}", clip_score=base_clip,
                 style_shift=float("nan"), lora_effect=0.0) for i in range(n)]
    for scale, (shift, clip, effect) in points.items():
        for i in range(n):
            rows.append(dict(provider=provider, lora=lora, scale=scale, scales=f"{scale:g}", prompt_id="p", seed=i,
                             status="succeeded", image_path=f"{scale}-{i}.png", image_sha256=f"{lora}{scale}{i}{provider}",
                             clip_score=clip + (i - 1.5) * 0.001, style_shift=shift + (i - 1.5) * 0.001,
                             lora_effect=effect))
    return pd.DataFrame(rows)


def test_smallest_faithful_scale_reaching_90_percent_of_the_best():
    f = frame({0.5: (0.02, 0.80, 0.1), 0.8: (0.046, 0.79, 0.2), 1.0: (0.05, 0.78, 0.3), 1.5: (0.09, 0.60, 0.5)})
    (rec,) = recommend_scales(f, {"ink": entry()})
    # 1.5 has the largest shift but loses the prompt (0.60 < 0.95 * 0.80); best faithful = 0.05
    assert [p.faithful for p in rec.points] == [True, True, True, False]
    assert rec.scale == 0.8 and rec.basis == "style_shift"
    assert rec.catalogue_scale == 0.8 and rec.catalogue_range == (0.25, 1.5)
    assert "0.0460" in rec.reason or "+0.0460" in rec.reason


def test_no_recommendation_when_nothing_is_faithful_or_nothing_moves():
    (rec,) = recommend_scales(frame({0.5: (0.05, 0.5, 0.1)}), {"ink": entry()})
    assert rec.scale is None and "drops mean CLIPScore" in rec.reason
    (rec,) = recommend_scales(frame({0.5: (-0.01, 0.8, 0.1), 1.0: (-0.02, 0.8, 0.1)}), {"ink": entry()})
    assert rec.scale is None and "toward the style" in rec.reason


def test_lora_effect_is_the_basis_without_a_style_prompt_and_results_are_clamped():
    f = frame({0.5: (float("nan"), 0.8, 0.05), 2.0: (float("nan"), 0.8, 0.30)})
    (rec,) = recommend_scales(f, {"ink": entry(style_prompt=None, rng=(0.25, 1.5))})
    assert rec.basis == "lora_effect" and rec.measured_scale == 2.0 and rec.scale == 1.5
    assert rec.warnings and "clamped to 1.5" in rec.warnings[0]


def test_one_recommendation_per_provider():
    f = pd.concat([frame({0.5: (0.055, 0.8, 0.1), 1.0: (0.06, 0.8, 0.2)}, provider="fal"),
                   frame({0.5: (0.01, 0.8, 0.1), 1.0: (0.06, 0.8, 0.2)}, provider="novita")])
    recs = {r.provider: r.scale for r in recommend_scales(f, {"ink": entry()})}
    assert recs == {"fal": 0.5, "novita": 1.0}


CATALOGUE = """\
# my catalogue: keep this comment
version: 1
loras:
  # the ink one
  - id: ink
    name: Ink
    source: {path: ink.safetensors}
    kind: style
    scale: {recommended: 0.8, range: [0.25, 1.5]}   # tuned by hand
    style_prompt: an ink drawing
    provenance:
      name: {source: me, confirmed: true}

  - id: neon
    name: Neon
    source: {path: neon.safetensors}
    kind: style
    scale: {recommended: 1.0, range: [0.5, 1.5]}
"""


def test_write_keeps_comments_and_order_and_records_the_evidence(tmp_path: Path):
    from lorascope.registry.catalogue import load_catalogue

    path = tmp_path / "loras.yaml"
    path.write_text(CATALOGUE)
    f = frame({0.5: (0.058, 0.8, 0.1), 1.0: (0.06, 0.8, 0.2)})
    (rec,) = recommend_scales(f, {"ink": entry()})
    written = write_recommendations(path, [rec], run_dir=Path("runs/x"), clip_label="ViT-B-32:openai", today="2026-11-23")
    assert written == ["ink"]
    text = path.read_text()
    assert "# my catalogue: keep this comment" in text and "# the ink one" in text and "# tuned by hand" in text
    assert "scale: {recommended: 0.5, range: [0.25, 1.5]}" in text
    assert text.index("id: ink") < text.index("id: neon")
    # everything else is untouched, line for line
    import difflib

    diff = list(difflib.ndiff(CATALOGUE.splitlines(), text.splitlines()))
    removed = [d[2:] for d in diff if d.startswith("- ")]
    added = [d[2:] for d in diff if d.startswith("+ ")]
    assert removed == ["    scale: {recommended: 0.8, range: [0.25, 1.5]}   # tuned by hand"]
    assert added[0] == "    scale: {recommended: 0.5, range: [0.25, 1.5]}   # tuned by hand"
    assert len(added) == 2 and added[1].startswith("      scale: {source: 'lorascope recommend: run runs/x")
    ink = load_catalogue(path).get("ink")
    assert ink.scale.recommended == 0.5
    prov = ink.provenance["scale"]
    assert "runs/x" in prov.source and "2026-11-23" in prov.source and "fal" in prov.source
    assert prov.confirmed is False and "measured by rule" in (prov.note or "")
    assert ink.provenance["name"].confirmed is True
    assert load_catalogue(path).get("neon").scale.recommended == 1.0


def test_write_refuses_an_unknown_entry(tmp_path: Path):
    from lorascope.evals.recommend import CatalogueWriteError

    path = tmp_path / "loras.yaml"
    path.write_text(CATALOGUE)
    f = frame({0.5: (0.05, 0.8, 0.1)}, lora="ghost")
    (rec,) = recommend_scales(f, {})
    with pytest.raises(CatalogueWriteError, match="no entry 'ghost'"):
        write_recommendations(path, [rec], run_dir=Path("r"), clip_label="x")
    assert path.read_text() == CATALOGUE
