"""Embeddings cached by (model id, kind, content key) in SQLite.

Where: `$LORASCOPE_CACHE/embeddings.db` (the same cache folder the harness shares across
runs), so an image two runs share — a baseline and today's run, or a re-run that reused a
stored generation — is embedded once for all of them. The run folder stays self-contained
anyway: the scores themselves are written into the run's own `run.db`; deleting this cache
only costs a recomputation.

Keys: an image is keyed by the sha256 of its file (the store's `image_sha256`), a text by
the sha256 of its UTF-8 bytes. Vectors are stored L2-normalised, float32.

The same file holds the plugin scorers' numbers (`scalar_scores`): one float per (scorer id,
key), where the scorer id names the weights exactly (scorer + weights hash) and the key is
the image sha256, or `image sha256:text sha256` for a scorer that reads the prompt. A
re-score that finds every key here loads no model.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Iterable, Literal, Mapping

import numpy as np

from lorascope.registry.digest import sha256_file

Kind = Literal["image", "text"]
_CHUNK = 500  # keys per `IN (...)` query, well below SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model_id TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('image', 'text')),
    key      TEXT NOT NULL,
    dim      INTEGER NOT NULL,
    vector   BLOB NOT NULL,
    PRIMARY KEY (model_id, kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    path     TEXT NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    PRIMARY KEY (path, size, mtime_ns)
);
CREATE TABLE IF NOT EXISTS scalar_scores (
    scorer_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (scorer_id, key)
) WITHOUT ROWID;
"""


def default_cache_dir() -> Path:
    """`$LORASCOPE_CACHE`, else the user's cache folder (registry.resolve picks it)."""
    env = os.environ.get("LORASCOPE_CACHE")
    if env:
        return Path(env).expanduser()
    from lorascope.registry.resolve import user_cache_dir

    return user_cache_dir()


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """A small key-value store of embedding vectors; safe to share between processes
    (SQLite WAL, one short transaction per `put_many`)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_dir() / "embeddings.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_many(self, model_id: str, kind: Kind, keys: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, vector FROM embeddings WHERE model_id=? AND kind=? AND key IN ({marks})",
                (model_id, kind, *chunk),
            )
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, kind: Kind, vectors: Mapping[str, np.ndarray]) -> None:
        rows = [
            (model_id, kind, key, int(vec.shape[-1]), np.ascontiguousarray(vec, dtype=np.float32).tobytes())
            for key, vec in vectors.items()
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)", rows)

    def get_scores(self, scorer_id: str, keys: Iterable[str]) -> dict[str, float]:
        """{key: value} for the keys this scorer has already scored."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, float] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, value FROM scalar_scores WHERE scorer_id=? AND key IN ({marks})", (scorer_id, *chunk)
            )
            found.update(rows)
        return found

    def put_scores(self, scorer_id: str, values: Mapping[str, float]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO scalar_scores VALUES (?, ?, ?)",
                [(scorer_id, k, float(v)) for k, v in values.items()],
            )

    def count(self, model_id: str | None = None) -> int:
        if model_id is None:
            return self._db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        return self._db.execute("SELECT count(*) FROM embeddings WHERE model_id=?", (model_id,)).fetchone()[0]

    def checkpoint_sha256(self, path: Path) -> str:
        """The checkpoint's content hash, remembered by (path, size, mtime) so a large file
        is hashed once, not on every `lorascope score`."""
        st = path.stat()
        ident = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        row = self._db.execute(
            "SELECT sha256 FROM checkpoints WHERE path=? AND size=? AND mtime_ns=?", ident
        ).fetchone()
        if row:
            return row[0]
        sha = sha256_file(path)
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)", (*ident, sha))
        return sha
