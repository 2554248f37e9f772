"""Resolving entries to verified local files: URL (loopback), Hub (loopback endpoint + offline cache), path."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from registry_builders import FakeHub, Loopback, Route, lora_tensors, sha256_bytes, write_safetensors

from lorascope.registry.models import LoraEntry
from lorascope.registry.resolve import ResolveError, lora_cache_dir, resolve


def make_entry(**source: object) -> LoraEntry:
    return LoraEntry.model_validate({
        "id": "x", "name": "X", "kind": "style", "source": source, "scale": {"recommended": 1, "range": [0, 1]},
    })


@pytest.fixture
def lora_bytes(tmp_path: Path) -> bytes:
    return write_safetensors(tmp_path / "src" / "l.safetensors", lora_tensors("diffusers")).read_bytes()


def cached_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_url_download_verified_cached_and_reused(loopback: Loopback, lora_bytes: bytes, tmp_path: Path) -> None:
    loopback.routes["/files/l.safetensors"] = Route(lora_bytes, chunked=True)
    sha = sha256_bytes(lora_bytes)
    entry = make_entry(type="url", url=f"{loopback.url}/files/l.safetensors", sha256=sha)
    got = resolve(entry)
    cache = lora_cache_dir()
    assert cache == tmp_path / "lorascope-cache" / "loras"
    assert got.path == cache / f"{sha}.safetensors" and got.sha256 == sha and got.size == len(lora_bytes)
    assert got.path.read_bytes() == lora_bytes
    assert cached_files(cache) == [got.path]  # no temp file left behind
    again = resolve(entry)
    assert again.path == got.path
    assert [r["method"] for r in loopback.requests] == ["GET"]  # second resolve came from the cache


def test_url_sha_mismatch_leaves_nothing(loopback: Loopback, lora_bytes: bytes, tmp_path: Path) -> None:
    loopback.routes["/l.safetensors"] = Route(lora_bytes)
    entry = make_entry(type="url", url=f"{loopback.url}/l.safetensors", sha256="0" * 64)
    cache = tmp_path / "c"
    with pytest.raises(ResolveError, match=f"has sha256 {sha256_bytes(lora_bytes)}, the catalogue pins 0000"):
        resolve(entry, cache_dir=cache)
    assert cached_files(cache) == []


def test_url_size_cap_declared_and_streamed(loopback: Loopback, lora_bytes: bytes, tmp_path: Path) -> None:
    sha = sha256_bytes(lora_bytes)
    loopback.routes["/declared.safetensors"] = Route(lora_bytes)
    loopback.routes["/streamed.safetensors"] = Route(lora_bytes, chunked=True)
    cache = tmp_path / "c"
    with pytest.raises(ResolveError, match="over the 1000-byte download cap"):
        resolve(make_entry(type="url", url=f"{loopback.url}/declared.safetensors", sha256=sha),
                cache_dir=cache, max_bytes=1000)
    with pytest.raises(ResolveError, match="exceeded the 1000-byte download cap"):
        resolve(make_entry(type="url", url=f"{loopback.url}/streamed.safetensors", sha256=sha),
                cache_dir=cache, max_bytes=1000)
    assert cached_files(cache) == []


def test_url_pickle_content_refused_even_with_matching_sha(loopback: Loopback, tmp_path: Path) -> None:
    payload = pickle.dumps({"weights": [1, 2, 3]})
    loopback.routes["/sneaky.safetensors"] = Route(payload)
    entry = make_entry(type="url", url=f"{loopback.url}/sneaky.safetensors", sha256=sha256_bytes(payload))
    with pytest.raises(ResolveError, match="pickle"):
        resolve(entry, cache_dir=tmp_path / "c")
    assert cached_files(tmp_path / "c") == []


def test_url_http_error(loopback: Loopback, tmp_path: Path) -> None:
    entry = make_entry(type="url", url=f"{loopback.url}/missing.safetensors", sha256="a" * 64)
    with pytest.raises(ResolveError, match="HTTP 404"):
        resolve(entry, cache_dir=tmp_path / "c")


def test_url_tokens_never_reach_messages(loopback: Loopback, lora_bytes: bytes, tmp_path: Path) -> None:
    # download links often carry a credential in the query string (e.g. ?token=...)
    loopback.routes["/l.safetensors"] = Route(lora_bytes)
    base = loopback.url.replace("http://", "http://user:pw-secret-1@")
    cases = [
        (f"{base}/missing.safetensors?token=tk-secret-1", "a" * 64, "HTTP 404"),
        (f"{base}/l.safetensors?token=tk-secret-1", "0" * 64, "the catalogue pins"),
        ("http://127.0.0.1:9/l.safetensors?token=tk-secret-1", "a" * 64, "ConnectError"),
    ]
    for url, sha, expected in cases:
        with pytest.raises(ResolveError) as info:
            resolve(make_entry(type="url", url=url, sha256=sha), cache_dir=tmp_path / "c")
        message = str(info.value)
        assert expected in message and ".safetensors" in message  # still says which file
        assert "tk-secret-1" not in message and "pw-secret-1" not in message
        assert info.value.__context__ is None  # an httpx error would carry the whole URL


def test_local_path_relative_to_catalogue(tmp_path: Path, lora_bytes: bytes) -> None:
    (tmp_path / "cat" / "w").mkdir(parents=True)
    (tmp_path / "cat" / "w" / "l.safetensors").write_bytes(lora_bytes)
    got = resolve(make_entry(type="path", path="w/l.safetensors"), tmp_path / "cat")
    assert got.path == tmp_path / "cat" / "w" / "l.safetensors" and got.sha256 == sha256_bytes(lora_bytes)
    with pytest.raises(ResolveError, match="does not exist"):
        resolve(make_entry(type="path", path="w/none.safetensors"), tmp_path / "cat")
    with pytest.raises(ResolveError, match="catalogue pins"):
        resolve(make_entry(type="path", path="w/l.safetensors", sha256="b" * 64), tmp_path / "cat")
    (tmp_path / "cat" / "w" / "fake.safetensors").write_bytes(pickle.dumps([1]))
    with pytest.raises(ResolveError, match="pickle"):
        resolve(make_entry(type="path", path="w/fake.safetensors"), tmp_path / "cat")


def test_hub_download_through_loopback_endpoint_then_offline(
    fake_hub: FakeHub, lora_bytes: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    commit = fake_hub.add_file("owner/style-lora", "style.safetensors", lora_bytes)
    entry = make_entry(type="hub", repo="owner/style-lora", file="style.safetensors", revision=commit,
                       sha256=sha256_bytes(lora_bytes))
    got = resolve(entry)
    assert got.sha256 == sha256_bytes(lora_bytes) and got.path.read_bytes() == lora_bytes
    # huggingface_hub's own cache layout, under HF_HUB_CACHE
    assert got.path == tmp_path / "hf-cache" / "models--owner--style-lora" / "snapshots" / commit / "style.safetensors"
    paths = [r["path"] for r in fake_hub.server.requests]
    assert f"/owner/style-lora/resolve/{commit}/style.safetensors" in paths

    # offline: served from the cache without a single request
    before = len(fake_hub.server.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(entry).path == got.path
    assert len(fake_hub.server.requests) == before
    missing = make_entry(type="hub", repo="owner/other", file="o.safetensors", revision=commit)
    with pytest.raises(ResolveError, match="not in the Hugging Face cache and offline"):
        resolve(missing)


def test_hub_errors_are_one_line(fake_hub: FakeHub, lora_bytes: bytes) -> None:
    fake_hub.add_file("owner/a", "a.safetensors", lora_bytes)
    with pytest.raises(ResolveError, match="entry 'x'"):
        resolve(make_entry(type="hub", repo="owner/a", file="nope.safetensors"))
    with pytest.raises(ResolveError, match="catalogue pins"):
        resolve(make_entry(type="hub", repo="owner/a", file="a.safetensors", sha256="c" * 64))


def test_hub_token_sent_and_never_in_errors(
    fake_hub: FakeHub, lora_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_sekrit_token_123")
    fake_hub.add_file("owner/private", "p.safetensors", lora_bytes)
    resolve(make_entry(type="hub", repo="owner/private", file="p.safetensors"))
    auth = [
        {k.lower(): v for k, v in r["headers"].items()}.get("authorization")
        for r in fake_hub.server.requests if "/resolve/" in r["path"]
    ]
    assert auth and all(a == "Bearer hf_sekrit_token_123" for a in auth)
    with pytest.raises(ResolveError) as info:
        resolve(make_entry(type="hub", repo="owner/private", file="missing.safetensors"))
    assert "hf_sekrit" not in str(info.value)
