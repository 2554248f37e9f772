"""Trigger words in prompts, provider reference forms, and the CLIP token estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorascope.registry.catalogue import PROJECT_CATALOGUE, load_catalogue
from lorascope.registry.models import LoraEntry
from lorascope.registry.prompts import apply_triggers
from lorascope.registry.references import references
from lorascope.registry.tokens import CLIP_CONTEXT_LENGTH, estimate_clip_tokens


def entry(id: str, triggers: list[str], position: str = "prefix", **source: object) -> LoraEntry:
    return LoraEntry.model_validate({
        "id": id, "name": id, "kind": "style", "triggers": triggers, "trigger_position": position,
        "source": source or {"type": "hub", "repo": "o/r", "file": "f.safetensors"},
        "scale": {"recommended": 1, "range": [0, 1]},
    })


def test_triggers_prefix_suffix_and_no_duplicates() -> None:
    a = entry("a", ["class1cpa1nt"])
    b = entry("b", ["c0l0ringb00k", "line art"], position="suffix")
    assert apply_triggers("a cat on a sofa", [a]) == "class1cpa1nt, a cat on a sofa"
    assert apply_triggers("a cat", [a, b]) == "class1cpa1nt, a cat, c0l0ringb00k, line art"
    # already present (any case, whole word): not added again
    assert apply_triggers("Class1cpa1nt portrait of a cat", [a]) == "Class1cpa1nt portrait of a cat"
    assert apply_triggers("some LINE ART of a cat", [b]) == "some LINE ART of a cat, c0l0ringb00k"
    # a substring of another word does not count as present
    assert apply_triggers("xclass1cpa1nty", [a]) == "class1cpa1nt, xclass1cpa1nty"
    # the same trigger from two entries appears once; no triggers leaves the prompt alone
    assert apply_triggers("a cat", [a, entry("c", ["class1cpa1nt"])]) == "class1cpa1nt, a cat"
    assert apply_triggers("  a cat ", [entry("d", [])]) == "a cat"
    assert apply_triggers("", [a]) == "class1cpa1nt"


def test_non_ascii_trigger_found_inside_text() -> None:
    panyue = entry("p", ["Panyue", "潘悦"])
    assert apply_triggers("潘悦在海边", [panyue]) == "Panyue, 潘悦在海边"


def test_references_for_each_source(tmp_path: Path) -> None:
    hub = entry("h", [], type="hub", repo="owner/repo", file="dir/my lora.safetensors", revision="abc123")
    refs = references(hub, tmp_path)
    assert refs.url == "https://huggingface.co/owner/repo/resolve/abc123/dir/my%20lora.safetensors"
    assert refs.repo == "owner/repo" and refs.revision == "abc123" and refs.path is None
    unpinned = references(entry("u", [], type="hub", repo="owner/repo", file="x.safetensors"), tmp_path)
    assert unpinned.url == "https://huggingface.co/owner/repo/resolve/main/x.safetensors"
    sha = "a" * 64
    url = references(entry("w", [], type="url", url="https://cdn.example/x.safetensors?dl=1", sha256=sha), tmp_path)
    assert url.url == "https://cdn.example/x.safetensors?dl=1" and url.sha256 == sha and url.repo is None
    local = references(entry("l", [], type="path", path="weights/x.safetensors"), tmp_path)
    assert local.path == (tmp_path / "weights" / "x.safetensors").resolve() and local.url is None


def test_token_estimate_rule() -> None:
    assert estimate_clip_tokens("") == 2
    assert estimate_clip_tokens("a cat") == 4
    assert estimate_clip_tokens("watercolor") == 4  # 10 letters -> 2, + start/end
    assert estimate_clip_tokens("1024") == 6  # digits one by one
    assert estimate_clip_tokens("潘悦") == 8
    assert estimate_clip_tokens(" ".join(["cat"] * 75)) == CLIP_CONTEXT_LENGTH


def test_token_estimate_never_below_open_clip() -> None:
    """The warning must not miss: the estimate is an upper bound of CLIP's real tokenizer."""
    tokenizer_mod = pytest.importorskip("open_clip.tokenizer")
    tok = tokenizer_mod.SimpleTokenizer()
    texts = [e.style_prompt for e in load_catalogue(PROJECT_CATALOGUE).entries if e.style_prompt]
    texts += [
        "class1cpa1nt, a portrait of an astronaut, 8k, ultra-detailed, (masterpiece:1.2)",
        "Antidisestablishmentarianism chrysanthemums photorealistic hyperdetailed bokeh",
        "潘悦在海边, café crème brûlée, emoji 🎨🖌️",
        "HDR, f/1.8, 35mm, ISO-100, 1/250s --ar 16:9",
    ]
    for text in texts:
        real = len(tok.encode(text)) + 2
        assert estimate_clip_tokens(text) >= real, (text, real)
