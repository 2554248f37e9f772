"""The validated-catalogue cache: same bytes, same path, same code -> no YAML parse; any edit
-> validated again; a broken or unwritable cache costs speed, never correctness."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lorascope.registry import catalogue_cache, safe_yaml
from lorascope.registry.catalogue import PROJECT_CATALOGUE, check_catalogue, load_catalogue
from lorascope.registry.problems import CatalogueError


def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the YAML was parsed again")

    monkeypatch.setattr(safe_yaml, "load_file", refuse)


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    return Path(shutil.copy(PROJECT_CATALOGUE, tmp_path / "loras.yaml"))


def test_second_load_reuses_the_result_without_parsing(shipped: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_catalogue(shipped)
    assert len(list(catalogue_cache.cache_dir().glob("*.json"))) == 1
    no_parsing(monkeypatch)
    again = load_catalogue(shipped)
    assert again.entries == first.entries and again.lines == first.lines and again.version == first.version == 2
    assert [str(w) for w in again.warnings] == [str(w) for w in first.warnings]
    # an edit is new bytes: parsed again
    shipped.write_text(shipped.read_text(encoding="utf-8").replace("name: Tarot Card", "name: Tarot"), encoding="utf-8")
    with pytest.raises(AssertionError, match="parsed again"):
        load_catalogue(shipped)


def test_errors_come_back_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nloras:\n  - id: x\n    name: X\n    kind: stlye\n", encoding="utf-8")
    with pytest.raises(CatalogueError) as first:
        load_catalogue(bad)
    no_parsing(monkeypatch)
    with pytest.raises(CatalogueError) as again:
        load_catalogue(bad)
    assert str(again.value) == str(first.value) and "field 'kind'" in str(first.value)
    assert check_catalogue(bad)[1] == first.value.problems


def test_corrupt_or_unwritable_cache_is_ignored(shipped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_catalogue(shipped)
    (cached,) = catalogue_cache.cache_dir().glob("*.json")
    cached.write_text("{not json", encoding="utf-8")
    assert load_catalogue(shipped).entries == first.entries  # validated again, and rewritten
    assert cached.read_text(encoding="utf-8").startswith('{"entries"')
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("LORASCOPE_CACHE", str(blocker))  # the cache folder cannot be created
    assert load_catalogue(shipped).entries == first.entries


def test_switched_off_and_bounded(shipped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORASCOPE_CATALOGUE_CACHE", "0")
    load_catalogue(shipped)
    assert not catalogue_cache.cache_dir().exists()
    monkeypatch.delenv("LORASCOPE_CATALOGUE_CACHE")
    small = tmp_path / "small.yaml"
    text = "version: 1\nloras: []\n"
    for i in range(catalogue_cache.KEEP + 3):
        small.write_text(text + f"# edit {i}\n", encoding="utf-8")
        load_catalogue(small)
    assert len(list(catalogue_cache.cache_dir().glob("*.json"))) == catalogue_cache.KEEP
