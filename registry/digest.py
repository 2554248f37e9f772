"""Content hashes of files: the identity of LoRA files, images and checkpoints everywhere in
lorascope (fingerprints, caches, content-addressed folders)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB chunks so large files don't fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class FileHashes:
    """sha256 of files, each file version (resolved path, mtime, size) hashed once. One
    instance can serve several readers of the same files (a Ray worker checking a LoRA and the
    local provider loading it), so a file is read for its hash once, not once per reader."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int], str] = {}

    def sha256(self, path: str | Path) -> str:
        """The file's sha256 (OSError when it cannot be read)."""
        path = Path(path)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        sha = self._seen.get(key)
        if sha is None:
            sha = self._seen[key] = sha256_file(path)
        return sha
