"""Catalogue entries and --lora values -> LoraSpec: reference forms, local files, scales,
pickle refusal."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lorascope.harness.lora_specs import LoraOptionError, parse_lora_option, spec_for_entry
from lorascope.registry.catalogue import load_catalogue


def write_lora(path: Path) -> str:
    save_file({"transformer.layers.0.attention.to_q.lora_A.weight": np.zeros((4, 32), dtype=np.float32),
               "transformer.layers.0.attention.to_q.lora_B.weight": np.zeros((32, 4), dtype=np.float32)}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def catalogue(tmp_path):
    sha = write_lora(tmp_path / "mine.safetensors")
    (tmp_path / "loras.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        loras:
          - id: classic-painting
            name: Classic Painting
            source:
              repo: renderartist/Classic-Painting-Z-Image-Turbo-LoRA
              file: Classic_Painting.safetensors
              revision: 0123456789abcdef0123456789abcdef01234567
            kind: style
            triggers: [class1cpa1nt]
            scale: {{recommended: 0.65, range: [0.5, 0.8]}}
          - id: mine
            name: Mine
            source: {{path: mine.safetensors, sha256: {sha}}}
            kind: style
            scale: {{recommended: 1.0, range: [0.0, 2.0]}}
        """))
    return load_catalogue(tmp_path / "loras.yaml")


def test_hub_entry_gives_url_repo_and_revision(catalogue):
    spec = spec_for_entry(catalogue.get("classic-painting"), 0.7, catalogue.dir)
    assert spec.id == "classic-painting" and spec.scale == 0.7
    assert spec.repo == "renderartist/Classic-Painting-Z-Image-Turbo-LoRA"
    assert spec.revision == "0123456789abcdef0123456789abcdef01234567"
    assert spec.url == ("https://huggingface.co/renderartist/Classic-Painting-Z-Image-Turbo-LoRA/resolve/"
                        "0123456789abcdef0123456789abcdef01234567/Classic_Painting.safetensors")
    assert spec.path is None


def test_local_file_resolves_and_hashes(catalogue, tmp_path):
    spec = spec_for_entry(catalogue.get("mine"), 0.5, catalogue.dir, local_file=True)
    assert Path(spec.path) == (tmp_path / "mine.safetensors").resolve()
    assert spec.sha256 == hashlib.sha256((tmp_path / "mine.safetensors").read_bytes()).hexdigest()
    assert spec.identity == f"sha256:{spec.sha256}"


def test_option_forms(catalogue, tmp_path):
    assert parse_lora_option("classic-painting", catalogue).scale == 0.65  # recommended
    assert parse_lora_option("classic-painting:0.8", catalogue).scale == 0.8
    bare = parse_lora_option(str(tmp_path / "mine.safetensors"), None)
    assert bare.scale == 1.0 and bare.id is None and bare.sha256 and bare.file == "mine.safetensors"
    assert parse_lora_option(f"{tmp_path / 'mine.safetensors'}:0.3", None).scale == 0.3


def test_option_errors(catalogue, tmp_path):
    (tmp_path / "evil.ckpt").write_bytes(b"pickle")
    with pytest.raises(LoraOptionError, match="pickle"):
        parse_lora_option(f"{tmp_path / 'evil.ckpt'}:0.5", catalogue)
    with pytest.raises(LoraOptionError, match="does not exist"):
        parse_lora_option("/nowhere/x.safetensors", catalogue)
    (tmp_path / "fake.safetensors").write_bytes(b"not a header at all")
    with pytest.raises(LoraOptionError, match="fake.safetensors"):
        parse_lora_option(str(tmp_path / "fake.safetensors"), catalogue)
    with pytest.raises(LoraOptionError, match="did you mean 'classic-painting'"):
        parse_lora_option("clasic-painting:0.5", catalogue)
