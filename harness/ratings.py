"""Human votes in run.db: the `ratings` table, and JSONL export/import to merge machines.

A vote compares two images of one *slot* (same provider, LoRA, prompt, seed, options and
image index) at two scales; the no-LoRA baseline is the scale `""`. The row keeps both
images by cell, index and content hash, so a vote still means the same pictures after the
run folder is copied, and an import into a run that lacks those pictures is refused.

Each vote is one commit (WAL, like the rest of run.db): the review server answers only after
`add_vote` returned, so an acknowledged vote survives the server being stopped. Votes are
keyed by a client-made id: sending one twice (a retry, an import of a file already merged)
stores it once. The table lives beside the harness's own (through `RunStore.connect()`),
so `store.py` needs no change to carry it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CHOICES = ("left", "right", "tie", "skip")
Choice = Literal["left", "right", "tie", "skip"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    vote_id      TEXT PRIMARY KEY,
    rater        TEXT NOT NULL,
    created_at   REAL NOT NULL,
    provider     TEXT NOT NULL,
    lora         TEXT NOT NULL,
    prompt_id    TEXT NOT NULL,
    seed         INTEGER,
    options      TEXT NOT NULL,
    left_cell    TEXT NOT NULL,
    left_index   INTEGER NOT NULL,
    left_sha256  TEXT NOT NULL,
    left_scale   TEXT NOT NULL,
    left_generation  INTEGER,
    right_cell   TEXT NOT NULL,
    right_index  INTEGER NOT NULL,
    right_sha256 TEXT NOT NULL,
    right_scale  TEXT NOT NULL,
    right_generation INTEGER,
    choice       TEXT NOT NULL CHECK (choice IN ('left','right','tie','skip'))
);
CREATE INDEX IF NOT EXISTS ratings_group ON ratings(provider, lora, rater);
"""

COLUMNS = (
    "vote_id", "rater", "created_at", "provider", "lora", "prompt_id", "seed", "options",
    "left_cell", "left_index", "left_sha256", "left_scale", "left_generation",
    "right_cell", "right_index", "right_sha256", "right_scale", "right_generation", "choice",
)

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class Vote(BaseModel):
    """One pairwise judgement, as stored and as exported (one JSON object per line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vote_id: str
    rater: str = Field(min_length=1, max_length=64)
    created_at: float = Field(ge=0)
    provider: str
    lora: str = Field(min_length=1)
    prompt_id: str
    seed: int | None
    options: str = "{}"
    left_cell: str
    left_index: int = Field(ge=0)
    left_sha256: str
    left_scale: str
    left_generation: int | None = None
    right_cell: str
    right_index: int = Field(ge=0)
    right_sha256: str
    right_scale: str
    right_generation: int | None = None
    choice: Choice

    @field_validator("vote_id")
    @classmethod
    def _vote_id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("must be 1-80 characters of A-Z a-z 0-9 _ . : -")
        return v

    @field_validator("rater")
    @classmethod
    def _rater(cls, v: str) -> str:
        if not v.isprintable() or v.strip() != v:
            raise ValueError("must be printable, without leading or trailing spaces")
        return v

    @field_validator("left_sha256", "right_sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not _SHA.match(v):
            raise ValueError("must be 64 lowercase hex digits")
        return v

    @property
    def decided(self) -> bool:
        return self.choice in ("left", "right")

    def row(self) -> tuple:
        return tuple(getattr(self, c) for c in COLUMNS)


class RatingsError(ValueError):
    """A votes file that cannot be imported; the message lists every problem."""


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


class Ratings:
    """The ratings table of one run.db, safe to share between threads (one connection,
    one lock): the review server's request threads all write through it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        ensure_schema(conn)
        self._data_version = self._read_data_version()

    def _read_data_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @classmethod
    def open(cls, run_dir: str | Path) -> "Ratings":
        from lorascope.harness.store import RunStore

        with RunStore.open(run_dir) as store:
            return cls(store.connect())

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Ratings":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_vote(self, vote: Vote) -> bool:
        """Commit one vote; False when a vote with this id was stored before (then nothing
        changes, whatever this one says: the first answer stands)."""
        with self._lock:
            cur = self._conn.execute(
                f"INSERT OR IGNORE INTO ratings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                vote.row(),
            )
            return cur.rowcount == 1

    def votes(self, rater: str | None = None) -> list[Vote]:
        sql = f"SELECT {', '.join(COLUMNS)} FROM ratings"
        params: tuple = ()
        if rater is not None:
            sql += " WHERE rater = ?"
            params = (rater,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY created_at, vote_id", params).fetchall()
        return [Vote.model_validate(dict(zip(COLUMNS, r))) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0])

    def changed_elsewhere(self) -> bool:
        """Whether another connection (`lorascope ratings import`, a second server) has committed
        to run.db since the last call: SQLite's `data_version` moves only for other writers, so
        a long-running reader re-reads the votes only when it must."""
        version = self._read_data_version()
        seen, self._data_version = self._data_version, version
        return seen != version

    # ---- export / import --------------------------------------------------------------

    def export_jsonl(self, path: Path) -> int:
        """Write every vote as one JSON object per line (oldest first); returns the count."""
        votes = self.votes()
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for vote in votes:
                fh.write(json.dumps(vote.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) + "\n")
        tmp.replace(path)
        return len(votes)

    def import_jsonl(self, path: Path, known_images: Iterable[tuple[str, int, str]]) -> tuple[int, int]:
        """Add the votes of a JSONL export; returns (added, already present).

        Every line is checked first and all problems are reported at once (file, line, field);
        nothing is written unless the whole file is good. `known_images` are this run's
        (cell_id, image_index, sha256): a vote about pictures this run does not hold is
        refused, and so is a vote id already stored with different content."""
        known = set(known_images)
        problems: list[str] = []
        votes: list[tuple[int, Vote]] = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise RatingsError(f"{path}: cannot read: {exc}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: not JSON ({exc.msg})")
                continue
            try:
                vote = Vote.model_validate(data)
            except ValidationError as exc:
                vid = data.get("vote_id") if isinstance(data, dict) else None
                for err in exc.errors():
                    field = ".".join(str(p) for p in err["loc"]) or "(line)"
                    problems.append(f"{where}: vote {vid!r}: {field}: {err['msg']}")
                continue
            for side in ("left", "right"):
                key = (getattr(vote, f"{side}_cell"), getattr(vote, f"{side}_index"), getattr(vote, f"{side}_sha256"))
                if key not in known:
                    problems.append(
                        f"{where}: vote {vote.vote_id!r}: {side}_sha256: image {key[2][:12]}… of cell {key[0]!r} "
                        "is not in this run"
                    )
            votes.append((n, vote))
        seen: dict[str, Vote] = {}
        for n, vote in votes:
            earlier = seen.setdefault(vote.vote_id, vote)
            if earlier != vote:
                problems.append(f"{path}:{n}: vote {vote.vote_id!r}: vote_id: appears twice with different content")
        with self._lock:
            for n, vote in votes:
                row = self._conn.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM ratings WHERE vote_id = ?", (vote.vote_id,)
                ).fetchone()
                if row is not None and Vote.model_validate(dict(zip(COLUMNS, row))) != vote:
                    problems.append(
                        f"{path}:{n}: vote {vote.vote_id!r}: vote_id: already stored with different content"
                    )
        if problems:
            raise RatingsError(f"{path}: {len(problems)} problem(s), nothing imported:\n  " + "\n  ".join(problems))
        added = 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for _, vote in seen.items():
                    cur = self._conn.execute(
                        f"INSERT OR IGNORE INTO ratings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                        vote.row(),
                    )
                    added += cur.rowcount
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return added, len(seen) - added
