"""LoRA files for Ray workers that cannot read the driver's disk: content-addressed shipping.

A request names its LoRA by a path on the driver's machine and by the sha256 it was planned
(and fingerprinted) with. A Ray worker on another node may not have that path, or may have other
bytes there. Then the driver ships the file's bytes through Ray's object store (once per
distinct file) and the worker keeps them in a worker-local folder named by sha256, written
atomically and hashed again after the write. A worker never loads bytes whose sha256 differs
from the planned one: the image would change while the fingerprint says it did not. The pure
parts live here (no Ray, no torch) so they are tested without starting a cluster.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lorascope.registry.digest import FileHashes, sha256_file
from lorascope.registry.models import PICKLE_SUFFIXES

#: `auto`: ship a file only when a worker cannot read it (or finds other bytes) at the request's
#: path; `always`: every worker loads from its own cache folder, shipped from the driver;
#: `never`: workers must have the files at the same paths (a shared filesystem).
ShipMode = Literal["auto", "always", "never"]
SHIP_MODES: tuple[str, ...] = ("auto", "always", "never")

#: Error kind of a cell whose LoRA bytes are not the ones it was planned with (or cannot be had).
LORA_MISMATCH = "lora_mismatch"
LORA_UNAVAILABLE = "lora_unavailable"
#: Where a worker keeps shipped files when `lora_cache` is not set (on the worker's own node).
CACHE_ENV = "LORASCOPE_RAY_LORA_CACHE"


class ShipError(Exception):
    """A LoRA's bytes cannot be had with the planned sha256; `kind` says which failure it is."""

    def __init__(self, message: str, kind: str = LORA_MISMATCH) -> None:
        super().__init__(message)
        self.kind = kind


def default_cache_dir() -> Path:
    """`$LORASCOPE_RAY_LORA_CACHE`, else `ray-loras` in the per-user cache (evaluated on the worker)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from lorascope.registry.resolve import user_cache_dir

    return user_cache_dir() / "ray-loras"


def cached_path(cache_dir: Path, sha256: str) -> Path:
    """Where the file with this sha256 lives in a cache folder (the suffix the loader checks for)."""
    return Path(cache_dir) / sha256[:2] / f"{sha256}.safetensors"


def refuse_pickle(path: str) -> None:
    """Only .safetensors files travel: a pickle file executes code when loaded."""
    lower = path.lower()
    if lower.endswith(PICKLE_SUFFIXES) or not lower.endswith(".safetensors"):
        raise ShipError(f"LoRA {path}: only .safetensors files are shipped to Ray workers "
                        "(pickle weight files execute code when loaded)", LORA_UNAVAILABLE)


@dataclass
class Hasher:
    """sha256 of files a worker may or may not be able to read, each file version hashed once
    (registry.digest.FileHashes; pass the local provider's to share its hashes)."""

    hashes: FileHashes = field(default_factory=FileHashes)

    def sha_of(self, path: Path) -> str | None:
        """The file's sha256, or None when it cannot be read as a regular file."""
        try:
            return self.hashes.sha256(path) if path.is_file() else None
        except OSError:
            return None


def read_verified(path: str, sha256: str) -> bytes:
    """The driver's side: the file's bytes, refused unless they are the planned ones (the file
    may have been replaced since the grid was planned)."""
    refuse_pickle(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ShipError(f"LoRA {path}: cannot be read on the driver to ship it ({exc.strerror or exc})",
                        LORA_UNAVAILABLE) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ShipError(f"LoRA {path}: its bytes now have sha256 {digest[:12]}…, the run was planned with "
                        f"{sha256[:12]}… (the file changed); not shipped")
    return data


def write_verified(cache_dir: Path, sha256: str, data: bytes) -> Path:
    """The worker's side: keep shipped bytes under their sha256, atomically (a temp file in the
    same folder, fsynced, renamed), hashed before and after the write. Bytes that do not match
    leave nothing behind."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ShipError(f"shipped LoRA bytes have sha256 {digest[:12]}…, the request was planned with "
                        f"{sha256[:12]}…; not loaded")
    target = cached_path(cache_dir, sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{sha256[:12]}-", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    after = sha256_file(target)
    if after != sha256:  # a disk or another writer changed it under us
        target.unlink(missing_ok=True)
        raise ShipError(f"LoRA {sha256[:12]}… written to {target} reads back as {after[:12]}…; removed")
    return target


def find_local(path: str, sha256: str, cache_dir: Path, hasher: Hasher, *, use_path: bool = True) -> Path | None:
    """A file with exactly these bytes that this worker can load: the request's own path when
    it holds them (unless `use_path` is off, mode `always`), else the cache folder's copy; None
    when the worker has no such file (the driver must ship it)."""
    if use_path:
        own = Path(path)
        if hasher.sha_of(own) == sha256:
            return own
    cached = cached_path(cache_dir, sha256)
    if hasher.sha_of(cached) == sha256:
        return cached
    return None


def why_not_local(path: str, sha256: str, hasher: Hasher) -> str:
    """One phrase for a message: the path is missing here, or holds other bytes."""
    sha = hasher.sha_of(Path(path))
    if sha is None:
        return "not readable on this worker"
    return f"holds other bytes on this worker (sha256 {sha[:12]}…, planned {sha256[:12]}…)"
