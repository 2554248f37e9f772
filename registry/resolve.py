"""Turn a catalogue entry into a verified local safetensors file.

- Hub entries go through huggingface_hub (its cache, the pinned revision, HF_HUB_OFFLINE,
  HF_TOKEN and HF_ENDPOINT read when called, so a test or a proxy can set them late).
- URL entries stream through httpx into `<cache>/<sha256>.safetensors`: the size is capped,
  the sha256 is computed while streaming, and the file is renamed into place only when it
  matches, so a bad download never sits in the cache.
- Local paths are used as they are.
Every result is checked to be a safetensors file: pickle weights are refused everywhere.
Messages show a URL without its query string or `user:password@` (download links often carry
a token there, e.g. `?token=...`).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel

from lorascope.registry.digest import CHUNK, sha256_file
from lorascope.registry.models import PICKLE_SUFFIXES, HubSource, LoraEntry, PathSource, UrlSource
from lorascope.registry.safetensors_header import NotSafetensorsError, read_header

DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB: far above any LoRA, far below a disk filler
TRUE = {"1", "on", "yes", "true"}
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")


def shown_url(url: str) -> str:
    """`url` as messages may show it: no query string, fragment or credentials."""
    return _USERINFO.sub(r"\1", url.split("?", 1)[0].split("#", 1)[0])


class ResolveError(Exception):
    """An entry could not be turned into a verified local file; the message says why."""


class ResolvedFile(BaseModel):
    path: Path
    sha256: str
    size: int


def user_cache_dir() -> Path:
    """The per-user cache folder, the way platformdirs picks it (without the dependency)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "lorascope" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "lorascope"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lorascope"


def lora_cache_dir() -> Path:
    """Where URL downloads are kept: $LORASCOPE_CACHE/loras, else the user cache dir."""
    root = os.environ.get("LORASCOPE_CACHE")
    return (Path(root) if root else user_cache_dir()) / "loras"


def max_download_bytes() -> int:
    value = os.environ.get("LORASCOPE_MAX_DOWNLOAD_BYTES")
    return int(value) if value else DEFAULT_MAX_BYTES


def resolve(
    entry: LoraEntry,
    catalogue_dir: Path | None = None,
    *,
    cache_dir: Path | None = None,
    max_bytes: int | None = None,
) -> ResolvedFile:
    """A local, verified safetensors file for `entry` (downloaded once, then from the cache)."""
    src = entry.source
    where = f"entry {entry.id!r}"
    if isinstance(src, HubSource):
        path = _resolve_hub(src, where)
        return _verified(path, src.sha256, where)
    if isinstance(src, UrlSource):
        return _resolve_url(src, cache_dir or lora_cache_dir(), max_bytes or max_download_bytes(), where)
    assert isinstance(src, PathSource)
    path = src.path.expanduser()
    if not path.is_absolute():
        path = Path(catalogue_dir or Path.cwd()) / path
    if not path.is_file():
        raise ResolveError(f"{where}: local file {path} does not exist")
    return _verified(path, src.sha256, where)


def _refuse_pickle_name(name: str, where: str) -> None:
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise ResolveError(f"{where}: {name!r} is a pickle weight file; refused (pickle executes code when loaded)")
    if not name.lower().endswith(".safetensors"):
        raise ResolveError(f"{where}: {name!r} is not a .safetensors file")


def _verified(path: Path, expected_sha: str | None, where: str) -> ResolvedFile:
    _refuse_pickle_name(path.name, where)
    try:
        read_header(path)
    except NotSafetensorsError as exc:
        raise ResolveError(f"{where}: {path}: {exc}") from None
    digest = sha256_file(path)
    if expected_sha and digest != expected_sha:
        raise ResolveError(f"{where}: {path} has sha256 {digest}, the catalogue pins {expected_sha}")
    return ResolvedFile(path=path, sha256=digest, size=path.stat().st_size)


def hf_cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None  # huggingface_hub's default


def hub_offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").lower() in TRUE


def _resolve_hub(src: HubSource, where: str) -> Path:
    if src.file is None:
        raise ResolveError(f"{where}: the file in {src.repo} is not known yet; "
                           "`lorascope registry verify ID --write` fills it from the repo")
    _refuse_pickle_name(src.file, where)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    label = f"{src.repo}/{src.file}@{src.revision or 'main'}"
    try:
        return Path(
            hf_hub_download(
                src.repo,
                src.file,
                revision=src.revision,
                cache_dir=hf_cache_dir(),
                endpoint=os.environ.get("HF_ENDPOINT") or None,
                token=os.environ.get("HF_TOKEN") or None,
                local_files_only=hub_offline(),
            )
        )
    except GatedRepoError:
        raise ResolveError(f"{where}: {src.repo} is gated; accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ResolveError(f"{where}: repo {src.repo} not found (or private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ResolveError(f"{where}: revision {src.revision!r} not found in {src.repo}") from None
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its base class
        mode = "offline (HF_HUB_OFFLINE)" if hub_offline() else "the Hub could not be reached"
        raise ResolveError(f"{where}: {label} is not in the Hugging Face cache and {mode}") from None
    except EntryNotFoundError:
        raise ResolveError(f"{where}: file {src.file!r} not found in {src.repo}") from None
    except OSError as exc:
        raise ResolveError(f"{where}: downloading {label} failed: {exc}") from None


def _resolve_url(src: UrlSource, cache_dir: Path, max_bytes: int, where: str) -> ResolvedFile:
    target = cache_dir / f"{src.sha256}.safetensors"
    if target.is_file():  # only ever renamed into place after its sha256 matched
        return ResolvedFile(path=target, sha256=src.sha256, size=target.stat().st_size)
    if os.environ.get("LORASCOPE_OFFLINE", "").lower() in TRUE:
        raise ResolveError(f"{where}: {shown_url(src.url)} is not cached and LORASCOPE_OFFLINE is set")
    cache_dir.mkdir(parents=True, exist_ok=True)
    size, digest = download_verified(src.url, target, src.sha256, max_bytes, where)
    return ResolvedFile(path=target, sha256=digest, size=size)


def download_verified(url: str, target: Path, sha256: str, max_bytes: int, where: str = "download") -> tuple[int, str]:
    """Stream `url` into `target`; the file appears only if its sha256 matches and it is safetensors."""
    import httpx

    shown = shown_url(url)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            with httpx.stream("GET", url, follow_redirects=True, timeout=httpx.Timeout(30.0)) as response:
                if response.status_code != 200:
                    raise ResolveError(f"{where}: GET {shown} answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise ResolveError(
                        f"{where}: {shown} is {int(declared)} bytes, over the {max_bytes}-byte download cap"
                    )
                for chunk in response.iter_bytes(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ResolveError(f"{where}: {shown} exceeded the {max_bytes}-byte download cap")
                    digest.update(chunk)
                    out.write(chunk)
        got = digest.hexdigest()
        if got != sha256:
            raise ResolveError(f"{where}: {shown} has sha256 {got}, the catalogue pins {sha256}; nothing was cached")
        try:
            read_header(tmp)
        except NotSafetensorsError as exc:
            raise ResolveError(f"{where}: {shown}: {exc}") from None
        os.replace(tmp, target)
        return size, got
    except httpx.HTTPError as exc:  # raised below: the httpx error holds the full URL
        failure = f"{where}: GET {shown} failed: {type(exc).__name__}: {str(exc).replace(url, shown)}"
    finally:
        tmp.unlink(missing_ok=True)
    raise ResolveError(failure)
