"""The evals stage's tables in run.db, and `results.parquet` with the score columns.

`scores` holds one row per (image, CLIP model): the image is (cell_id, image_index,
image_sha256), so a cell regenerated with `--fresh` does not inherit the old image's scores.
`score_runs` remembers which models scored the run and when; the most recent one is what
`results.parquet`, `recommend` and `compare` use unless told otherwise. The harness's own
tables are never altered.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SCORE_VALUE_COLUMNS = ("clip_score", "clip_cosine", "style_cosine", "style_shift", "lora_effect", "agreement")

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    cell_id      TEXT NOT NULL,
    image_index  INTEGER NOT NULL,
    clip_model   TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    clip_score   REAL,
    clip_cosine  REAL,
    style_cosine REAL,
    style_shift  REAL,
    lora_effect  REAL,
    agreement    REAL,
    PRIMARY KEY (cell_id, image_index, clip_model)
);
CREATE TABLE IF NOT EXISTS score_runs (
    clip_model TEXT PRIMARY KEY,
    clip_label TEXT NOT NULL,
    scored_at  REAL NOT NULL,
    images     INTEGER NOT NULL
);
"""


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def write_scores(
    conn: sqlite3.Connection,
    clip_model: str,
    clip_label: str,
    rows: Iterable[tuple],
) -> int:
    """Replace this model's scores with `rows` ((cell_id, image_index, sha, *values)) in one
    transaction, so a crash mid-write leaves the previous scores, not half of the new."""
    ensure_schema(conn)
    rows = list(rows)
    with conn:
        conn.execute("DELETE FROM scores WHERE clip_model = ?", (clip_model,))
        conn.executemany(
            "INSERT INTO scores (cell_id, image_index, clip_model, image_sha256, "
            + ", ".join(SCORE_VALUE_COLUMNS)
            + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r[0], int(r[1]), clip_model, *r[2:]) for r in rows],
        )
        conn.execute(
            "INSERT OR REPLACE INTO score_runs VALUES (?, ?, ?, ?)", (clip_model, clip_label, time.time(), len(rows))
        )
    return len(rows)


def scored_models(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
    """(model id, label, scored_at), most recent first."""
    ensure_schema(conn)
    return list(conn.execute("SELECT clip_model, clip_label, scored_at FROM score_runs ORDER BY scored_at DESC"))


def resolve_model(conn: sqlite3.Connection, clip: str | None) -> str | None:
    """The model id to read scores for: the one matching `clip` (id or label), else the most
    recently used; None when the run was never scored."""
    models = scored_models(conn)
    if clip is None:
        return models[0][0] if models else None
    for model_id, label, _ in models:
        if clip in (model_id, label):
            return model_id
    return None


def run_model(run_dir: str | Path, clip: str | None = None) -> str | None:
    """The CLIP model id `clip` names among the run's scores (None: the latest), or None when
    the run was not scored with it."""
    from lorascope.harness.store import RunStore

    with RunStore.open(run_dir) as store:
        conn = store.connect()
        try:
            return resolve_model(conn, clip)
        finally:
            conn.close()


def scored_frame(run_dir: str | Path, clip: str | None = None) -> "pd.DataFrame":
    """The run's results frame with the score columns of one CLIP model joined on
    (cell_id, image_index, image_sha256); NaN where an image has no score (yet)."""
    import pandas as pd

    from lorascope.harness.store import RunStore

    with RunStore.open(run_dir) as store:
        frame = store.results_frame()
        conn = store.connect()
        try:
            model = resolve_model(conn, clip)
            scores = pd.read_sql_query(
                "SELECT cell_id, image_index, image_sha256, " + ", ".join(SCORE_VALUE_COLUMNS)
                + " FROM scores WHERE clip_model = ?",
                conn,
                params=(model or "",),
            )
        finally:
            conn.close()
    frame["image_index"] = frame["image_index"].astype("int64")
    scores["image_index"] = scores["image_index"].astype("int64")
    merged = frame.merge(scores, on=["cell_id", "image_index", "image_sha256"], how="left")
    merged.insert(len(frame.columns), "clip_model", model or "")
    for col in SCORE_VALUE_COLUMNS:
        merged[col] = merged[col].astype("float64")
    return merged


def export_scored_results(run_dir: str | Path, clip: str | None = None) -> tuple[Path, "pd.DataFrame"]:
    """Write `<run_dir>/results.parquet` (base columns + score columns) atomically; returns
    its path and the frame written (so a caller showing the scores need not read them again)."""
    from lorascope.harness.results import write_results

    frame = scored_frame(run_dir, clip)
    return write_results(frame, run_dir), frame
