"""The pure parts of LoRA shipping (no Ray, no torch): the content-addressed cache folder, the
atomic write checked before and after, which local file a worker may load, and the driver's
read that refuses a file changed since planning or a pickle."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lorascope.harness.lora_shipping import (
    LORA_MISMATCH, LORA_UNAVAILABLE, Hasher, ShipError, cached_path, default_cache_dir, find_local, read_verified,
    why_not_local, write_verified,
)

DATA = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + os.urandom(4096)
SHA = hashlib.sha256(DATA).hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_shipped_bytes_land_under_their_sha256_and_nothing_else_is_left(tmp_path):
    cache = tmp_path / "cache"
    target = write_verified(cache, SHA, DATA)
    assert target == cache / SHA[:2] / f"{SHA}.safetensors" == cached_path(cache, SHA)
    assert target.read_bytes() == DATA
    assert _files(cache) == [target]  # no temp file left beside it
    assert write_verified(cache, SHA, DATA) == target and _files(cache) == [target]  # again: same file


def test_bytes_that_are_not_the_planned_ones_are_refused_in_one_line_and_leave_nothing(tmp_path):
    cache = tmp_path / "cache"
    other = DATA + b"x"
    with pytest.raises(ShipError) as info:
        write_verified(cache, SHA, other)
    message = str(info.value)
    assert info.value.kind == LORA_MISMATCH and "\n" not in message
    assert hashlib.sha256(other).hexdigest()[:12] in message and SHA[:12] in message
    assert _files(cache) == []


def test_a_write_that_fails_half_way_leaves_no_file(tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_verified(cache, SHA, DATA)
    assert _files(cache) == []  # neither the target nor the temp file


def test_find_local_prefers_the_requests_path_only_when_it_holds_the_planned_bytes(tmp_path):
    cache, hasher = tmp_path / "cache", Hasher()
    own = tmp_path / "lora.safetensors"
    own.write_bytes(DATA)
    assert find_local(str(own), SHA, cache, hasher) == own
    assert find_local(str(own), SHA, cache, hasher, use_path=False) is None  # always: the cache only
    assert find_local(str(tmp_path / "missing.safetensors"), SHA, cache, hasher) is None

    own.write_bytes(b"other bytes at the same path")  # another node, another file under that name
    assert find_local(str(own), SHA, cache, hasher) is None
    assert "other bytes" in why_not_local(str(own), SHA, hasher)
    assert why_not_local(str(tmp_path / "missing.safetensors"), SHA, hasher) == "not readable on this worker"

    shipped = write_verified(cache, SHA, DATA)
    assert find_local(str(own), SHA, cache, hasher) == shipped
    assert find_local(str(own), SHA, cache, hasher, use_path=False) == shipped


def test_a_damaged_cache_copy_is_not_used(tmp_path):
    cache, hasher = tmp_path / "cache", Hasher()
    shipped = write_verified(cache, SHA, DATA)
    shipped.write_bytes(DATA[:-1] + b"\x00")  # a bit flipped on disk after the write
    assert find_local("/nowhere/lora.safetensors", SHA, cache, hasher) is None


def test_the_driver_ships_only_the_bytes_it_planned_with(tmp_path):
    path = tmp_path / "lora.safetensors"
    path.write_bytes(DATA)
    assert read_verified(str(path), SHA) == DATA

    path.write_bytes(DATA + b"changed")  # replaced after the grid was planned
    with pytest.raises(ShipError) as info:
        read_verified(str(path), SHA)
    assert info.value.kind == LORA_MISMATCH and "the file changed" in str(info.value)

    with pytest.raises(ShipError) as gone:
        read_verified(str(tmp_path / "gone.safetensors"), SHA)
    assert gone.value.kind == LORA_UNAVAILABLE and "gone.safetensors" in str(gone.value)


@pytest.mark.parametrize("name", ["lora.ckpt", "lora.pt", "lora.bin", "lora.pkl", "lora.txt"])
def test_pickle_and_other_files_never_travel(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(DATA)
    with pytest.raises(ShipError, match="only .safetensors files are shipped") as info:
        read_verified(str(path), SHA)
    assert info.value.kind == LORA_UNAVAILABLE


def test_default_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASCOPE_RAY_LORA_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("LORASCOPE_RAY_LORA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lorascope" / "ray-loras"


def test_the_settings_reach_the_ray_choice_and_a_relative_cache_folder_is_refused():
    from pydantic import ValidationError

    from lorascope.harness.ray_settings import ExecutorSettings, ray_choice

    choice = ray_choice(ExecutorSettings(executor="ray", ship_loras="always", lora_cache="~/ray-loras"), None)
    assert choice is not None and choice.ship_loras == "always" and choice.lora_cache == "~/ray-loras"
    assert ray_choice(ExecutorSettings(executor="ray"), None).ship_loras == "auto"  # the default
    with pytest.raises(ValidationError, match="ship_loras"):
        ExecutorSettings(ship_loras="sometimes")
    with pytest.raises(ValidationError, match="relative; give an absolute folder"):
        ExecutorSettings(lora_cache="cache/loras")
