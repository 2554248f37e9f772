"""Plugin scorers' numbers in run.db, and the frame columns they become.

`scorer_scores` holds one row per (image, scorer, model id): the value and its gain over the
same-seed no-LoRA baseline. `scorer_runs` remembers which weights each scorer used, when, and
whether they were random (a report labels those). Readers take the latest model per scorer.
Columns in results.parquet and in `recommend --objective`: `<scorer>` and `<scorer>_gain`
(e.g. `aesthetic`, `aesthetic_gain`, `hpsv2_gain`, `pickscore_gain`). CLIP keeps its own
table (evals.results): its columns are `clip_score`, `style_shift`, ... as before.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS scorer_scores (
    cell_id      TEXT NOT NULL,
    image_index  INTEGER NOT NULL,
    image_sha256 TEXT NOT NULL,
    scorer       TEXT NOT NULL,
    model_id     TEXT NOT NULL,
    value        REAL,
    gain         REAL,
    PRIMARY KEY (cell_id, image_index, scorer, model_id)
);
CREATE TABLE IF NOT EXISTS scorer_runs (
    scorer         TEXT NOT NULL,
    model_id       TEXT NOT NULL,
    label          TEXT NOT NULL,
    random_weights INTEGER NOT NULL,
    scored_at      REAL NOT NULL,
    images         INTEGER NOT NULL,
    PRIMARY KEY (scorer, model_id)
);
"""


@dataclass(frozen=True)
class StoredScorer:
    scorer: str
    model_id: str
    label: str
    random_weights: bool
    scored_at: float


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def write_scorer_values(
    conn: sqlite3.Connection, scorer: str, model_id: str, label: str, random_weights: bool, rows: Iterable[tuple]
) -> int:
    """Replace this (scorer, model)'s rows ((cell_id, image_index, sha, value, gain)) in one transaction."""
    ensure_schema(conn)
    rows = [(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows]
    stored = conn.execute(
        "SELECT cell_id, image_index, image_sha256, value, gain FROM scorer_scores WHERE scorer = ? AND model_id = ?",
        (scorer, model_id),
    ).fetchall()
    with conn:
        if sorted(stored) == sorted(rows):  # an idempotent re-score: only the date moves
            conn.execute("UPDATE scorer_runs SET scored_at = ? WHERE scorer = ? AND model_id = ?",
                         (time.time(), scorer, model_id))
            return len(rows)
        conn.execute("DELETE FROM scorer_scores WHERE scorer = ? AND model_id = ?", (scorer, model_id))
        conn.executemany(
            "INSERT INTO scorer_scores VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r[0], int(r[1]), r[2], scorer, model_id, r[3], r[4]) for r in rows],
        )
        conn.execute(
            "INSERT OR REPLACE INTO scorer_runs VALUES (?, ?, ?, ?, ?, ?)",
            (scorer, model_id, label, int(random_weights), time.time(), len(rows)),
        )
    return len(rows)


def latest_scorers(conn: sqlite3.Connection) -> list[StoredScorer]:
    """The most recent model of each scorer that scored this run, by scorer name."""
    ensure_schema(conn)
    rows = conn.execute(
        "SELECT scorer, model_id, label, random_weights, scored_at FROM scorer_runs ORDER BY scored_at DESC"
    ).fetchall()
    seen: dict[str, StoredScorer] = {}
    for scorer, model_id, label, rnd, at in rows:
        seen.setdefault(scorer, StoredScorer(scorer, model_id, label, bool(rnd), at))
    return sorted(seen.values(), key=lambda s: s.scorer)


def scorer_columns(frame: "pd.DataFrame", run_dir: str | Path) -> tuple["pd.DataFrame", list[StoredScorer]]:
    """`frame` (a run's results, keyed by cell_id/image_index/image_sha256) with `<scorer>` and
    `<scorer>_gain` columns for the latest model of every stored scorer."""
    import pandas as pd

    from lorascope.harness.store import RunStore

    with RunStore.open(run_dir) as store:
        conn = store.connect()
        try:
            stored = latest_scorers(conn)
            parts = {
                s.scorer: pd.read_sql_query(
                    "SELECT cell_id, image_index, image_sha256, value, gain FROM scorer_scores "
                    "WHERE scorer = ? AND model_id = ?", conn, params=(s.scorer, s.model_id))
                for s in stored
            }
        finally:
            conn.close()
    out = frame.copy()
    out["image_index"] = out["image_index"].astype("int64")
    for name, part in parts.items():
        part = part.rename(columns={"value": name, "gain": f"{name}_gain"})
        part["image_index"] = part["image_index"].astype("int64")
        out = out.drop(columns=[c for c in (name, f"{name}_gain") if c in out]).merge(
            part, on=["cell_id", "image_index", "image_sha256"], how="left")
        out[name] = out[name].astype("float64")
        out[f"{name}_gain"] = out[f"{name}_gain"].astype("float64")
    return out, stored
