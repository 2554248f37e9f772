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
