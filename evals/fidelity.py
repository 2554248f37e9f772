"""Fidelity to the input: how much of an img2img/inpaint input picture each image kept.

Why: in an image-conditioned grid the question is two-sided — take the LoRA's style *and*
keep the picture — and style shift alone only measures the first. Two numbers per image with
an input, side by side with style shift:

- `input_cosine`: CLIP image-image cosine between the image and its input (what it shows);
  the input's embedding goes through the same cache as every other image.
- `input_ssim`: SSIM (evals.ssim) to the input at a common downscaled size (its structure).

The inputs are read from the run's stored suite (files relative to it) and copied,
content-addressed, into the run's `images/` folder, so the report can show them and a later
re-score does not need the original files (`input_path` is that copy; run.db's `run_inputs`
says which). An https input is fetched once, at the first score (evals.input_fetch: https
only, verified, bounded like a local file), and kept the same way with its URL and the time
we fetched it: the provider fetched it earlier, when it generated, so if the run's requests
recorded another sha256, or a later fetch (`refetch`) gets other bytes, its rows get no
fidelity and `score` says why, rather than a number against the wrong picture. A failed
fetch is one problem line (the suite's file:line, the URL without its query string); the
rest is scored. Stored in run.db's `fidelity` table per CLIP model.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import ssl

    import pandas as pd

    from lorascope.evals.scorer import Embedder
    from lorascope.harness.store import RunStore

FIDELITY_COLUMNS = ("input_cosine", "input_ssim", "kept_ssim")

SCHEMA = """
CREATE TABLE IF NOT EXISTS fidelity (
    cell_id       TEXT NOT NULL,
    image_index   INTEGER NOT NULL,
    clip_model    TEXT NOT NULL,
    image_sha256  TEXT NOT NULL,
    input_sha256  TEXT NOT NULL,
    input_path    TEXT NOT NULL,
    input_cosine  REAL,
    input_ssim    REAL,
    kept_ssim     REAL,  -- inpaint: SSIM to the input outside the mask (what was to stay)
    PRIMARY KEY (cell_id, image_index, clip_model)
);
CREATE TABLE IF NOT EXISTS run_masks (
    input_id    TEXT PRIMARY KEY,
    mask_sha256 TEXT NOT NULL,
    mask_path   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_inputs (
    input_id     TEXT PRIMARY KEY,
    input_sha256 TEXT NOT NULL,
    input_path   TEXT NOT NULL,
    url          TEXT,  -- the https URL it was fetched from (NULL: a local file)
    fetched_at   TEXT,  -- when we fetched it (UTC, ISO 8601): later than the provider did
    conflict     TEXT   -- why it is not used: a later fetch or the run's requests disagree
);
"""


def has_inputs(frame: "pd.DataFrame") -> bool:
    return "init_image" in frame.columns and bool(frame["init_image"].notna().any())


@dataclass(frozen=True)
class _Kept:
    """A `run_inputs` row: the input's copy in the run, and for a URL input where and when it
    was fetched, and why it is not used (a later fetch disagreed), if so."""

    sha256: str
    path: str
    url: str | None = None
    fetched_at: str | None = None
    conflict: str | None = None


@contextmanager
def _fidelity_db(run_dir: str | Path) -> Iterator[tuple["RunStore", sqlite3.Connection]]:
    """The run's store and a connection with the fidelity tables in place, closed after."""
    from lorascope.harness.store import RunStore

    with RunStore.open(run_dir) as store:
        conn = store.connect()
        try:
            _ensure_schema(conn)
            yield store, conn
        finally:
            conn.close()


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables; a run scored before URL inputs were fetched gains their columns."""
    conn.executescript(SCHEMA)
    have = {row[1] for row in conn.execute("PRAGMA table_info(run_inputs)")}
    scored = {row[1] for row in conn.execute("PRAGMA table_info(fidelity)")}
    with conn:
        for column in ("url", "fetched_at", "conflict"):
            if column not in have:
                conn.execute(f"ALTER TABLE run_inputs ADD COLUMN {column} TEXT")
        if "kept_ssim" not in scored:  # a run scored before inpaint masks were measured
            conn.execute("ALTER TABLE fidelity ADD COLUMN kept_ssim REAL")


def collect_inputs(
    run_dir: Path, *, refetch: bool = False, verify: "ssl.SSLContext | bool" = True, fetch: bool = True,
) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """{image id: (sha256, path relative to the run)} for the suite's init inputs, copied into
    the run's images/ and recorded in run.db (so they outlive the original files and URLs), and
    why any could not be. Inputs recorded before are used when the suite's files are gone; an
    https input is fetched only when none is recorded (or `refetch`), see `_url_input`;
    never with `fetch=False` (a reader such as the review page shows what the run kept)."""
    from lorascope.harness.input_images import load_inputs
    from lorascope.harness.store import image_problem, write_image

    found: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    with _fidelity_db(run_dir) as (store, conn):
        recorded = {r[0]: _Kept(*r[1:]) for r in conn.execute(
            "SELECT input_id, input_sha256, input_path, url, fetched_at, conflict FROM run_inputs")}
        rows: dict[str, _Kept] = {}
        refused: set[str] = set()
        wanted: set[str] = set()
        suite = None
        try:
            suite = store.suite()
            wanted = {spec.id for spec in suite.images}
            inputs, load_problems = load_inputs(suite)
        except Exception as exc:  # noqa: BLE001 - a run without a readable suite keeps what it recorded
            inputs, load_problems = [], [f"{run_dir}: the run's suite cannot be read again ({exc})"]
        used = _shas_used(conn)
        fetched: dict[str, object] = {}  # url -> picture or FetchError: one request per URL per score
        for index, item in enumerate(inputs):
            if item.init is None:
                continue
            if item.init.url is not None:
                where = f"{suite.where('images', index, 'image')}: images[{index}].image"
                kept, problem = _url_input(Path(run_dir), item.init.url, where, recorded.get(item.id),
                                           used.get(item.id), fetched, refetch=refetch, verify=verify,
                                           fetch=fetch)
                if problem:
                    problems.append(problem)
                if kept is None or kept.conflict:
                    refused.add(item.id)
                if kept is not None:
                    rows[item.id] = kept
                    if not kept.conflict:
                        found[item.id] = (kept.sha256, kept.path)
                continue
            if item.init.sha256 not in used.get(item.id, {item.init.sha256}):
                problems.append(f"{item.init.source}: changed since the run used it (image {item.id!r}); "
                                "no fidelity for its images until the run is repeated with it")
                continue
            fmt = (item.init.mime or "image/png").split("/")[-1]
            found[item.id] = write_image(Path(run_dir), item.init.data, fmt)
            rows[item.id] = _Kept(*found[item.id])
        for input_id, kept in recorded.items():
            if (input_id not in found and input_id not in refused and not kept.conflict
                    and image_problem(Path(run_dir) / kept.path, kept.sha256) is None):
                found[input_id] = (kept.sha256, kept.path)
        if load_problems and not wanted <= set(found):  # an input neither readable nor kept
            problems += [f"{p} (no fidelity for its images)" for p in load_problems]
        with conn:
            conn.executemany(
                "INSERT OR REPLACE INTO run_inputs (input_id, input_sha256, input_path, url, fetched_at, conflict) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(i, k.sha256, k.path, k.url, k.fetched_at, k.conflict) for i, k in rows.items()])
    return found, problems


def _url_input(
    run_dir: Path, url: str, where: str, kept: _Kept | None, used: set[str] | None,
    fetched: dict[str, object], *, refetch: bool, verify: "ssl.SSLContext | bool", fetch: bool = True,
) -> tuple[_Kept | None, str | None]:
    """The run's copy of an https input (fetched now if none is kept, or `refetch`), and the
    problem to report. The provider fetched the URL when it generated and we fetch it later,
    so nothing proves both saw the same bytes; what can be checked is: a sha256 the run's
    requests recorded, and our own earlier fetch. When either disagrees with what the URL
    serves, the input gets no fidelity (a wrong number is worse than none), and the
    disagreement is kept in run_inputs.conflict so later scores say so too."""
    from lorascope.evals.input_fetch import FetchError, fetch_input
    from lorascope.harness.store import image_problem, write_image
    from lorascope.registry.resolve import shown_url

    shown = shown_url(url)
    mine = kept if kept is not None and kept.url == url else None
    if mine is not None and mine.conflict:
        return mine, mine.conflict
    intact = mine is not None and image_problem(run_dir / mine.path, mine.sha256) is None
    if intact and (not refetch or not fetch):
        return mine, None
    if not fetch:
        return None, f"{where}: {shown} is not kept in the run yet (`lorascope score RUN` fetches and keeps it)"
    if url not in fetched:
        try:
            fetched[url] = fetch_input(url, verify=verify)
        except FetchError as exc:
            fetched[url] = exc
    image = fetched[url]
    if isinstance(image, FetchError):
        exc = image
        if intact:  # a refetch that failed: the copy kept at the first fetch still stands
            return mine, f"{where}: {exc}; kept the copy fetched at {mine.fetched_at}"
        return None, f"{where}: {exc} (no fidelity for its images)"
    sha = str(image.sha256)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if mine is not None and mine.sha256 != sha:
        conflict = (f"{where}: {shown} served different bytes at {now} (sha256 {sha[:12]}...) than when it was "
                    f"fetched at {mine.fetched_at} ({mine.sha256[:12]}...); the provider may have used either, "
                    "so its images get no fidelity")
        return _Kept(mine.sha256, mine.path, url, mine.fetched_at, conflict), conflict
    _, rel = write_image(run_dir, image.data, (image.mime or "image/png").split("/")[-1])  # the report shows it
    if used and sha not in used:
        conflict = (f"{where}: {shown} now serves bytes (sha256 {sha[:12]}...) other than the run's requests "
                    f"recorded ({', '.join(sorted(s[:12] + '...' for s in used))}); its images get no fidelity")
        return _Kept(sha, rel, url, now, conflict), conflict
    return _Kept(sha, rel, url, mine.fetched_at if mine is not None else now), None


def _shas_used(conn: sqlite3.Connection, field: str = "init_image") -> dict[str, set[str]]:
    """{image id: the sha256(s) of the request's `field` picture (init_image, mask_image) the
    run's cells were generated from}, from the stored requests."""
    import json

    used: dict[str, set[str]] = {}
    rows = conn.execute("SELECT axes_json, request_json FROM cells WHERE request_json LIKE ?", (f'%"{field}":{{%',))
    for axes, request in rows:
        image_id = json.loads(axes).get("image")
        sha = (json.loads(request).get(field) or {}).get("sha256")
        if image_id and sha:
            used.setdefault(str(image_id), set()).add(sha)
    return used


def compute_fidelity(
    run_dir: Path, frame: "pd.DataFrame", embedder: "Embedder", image_vectors: dict[str, np.ndarray],
    *, refetch: bool = False, verify: "ssl.SSLContext | bool" = True,
) -> tuple[list[tuple], list[str]]:
    """Rows (cell_id, image_index, image_sha256, input_sha256, input_path, cosine, ssim, kept_ssim)
    for every scored image whose input is kept, and the problems met. The input's embedding is
    cached. `kept_ssim`: an inpaint's SSIM outside its mask (None without a kept mask)."""
    from lorascope.evals.ssim import ssim_files

    if not has_inputs(frame):
        return [], []
    run_dir = Path(run_dir)
    inputs, problems = collect_inputs(run_dir, refetch=refetch, verify=verify)
    if not inputs:
        return [], problems
    input_vectors = embedder.images([(sha, run_dir / rel) for sha, rel in inputs.values()])
    masks, mask_problems = collect_masks(run_dir)
    problems += mask_problems
    ssim_memo: dict[tuple[str, str, str | None], float] = {}

    def ssim(image: str, image_sha: str, input_rel: str, input_sha: str, mask_rel: str | None) -> float:
        key = (image_sha, input_sha, mask_rel)
        if key not in ssim_memo:
            ssim_memo[key] = ssim_files(run_dir / image, run_dir / input_rel,
                                        keep_mask=run_dir / mask_rel if mask_rel else None)
        return ssim_memo[key]

    rows = []
    wanted = frame[frame["init_image"].isin(inputs) & frame["image_sha256"].isin(image_vectors)]
    for r in wanted[["cell_id", "image_index", "image_sha256", "image_path", "init_image"]].itertuples(index=False):
        in_sha, in_rel = inputs[r.init_image]
        cosine = float(np.dot(image_vectors[r.image_sha256], input_vectors[in_sha]))
        whole = ssim(r.image_path, r.image_sha256, in_rel, in_sha, None)
        mask = masks.get(r.init_image)
        kept = ssim(r.image_path, r.image_sha256, in_rel, in_sha, mask[1]) if mask else None
        rows.append((r.cell_id, int(r.image_index), r.image_sha256, in_sha, in_rel, cosine, whole,
                     None if kept is None or np.isnan(kept) else kept))
    return rows, problems


def collect_masks(run_dir: Path) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """{image id: (sha256, path relative to the run)} of the inpaint masks the run's cells were
    made with, copied into the run (table `run_masks`) so re-scores work without the suite's
    files; a mask file changed since the run, or an https mask (not fetched), gets none."""
    from lorascope.harness.input_images import load_inputs
    from lorascope.harness.store import image_problem, write_image

    found: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    with _fidelity_db(run_dir) as (store, conn):
        used = _shas_used(conn, "mask_image")
        if not used:
            return {}, []
        try:
            inputs, _ = load_inputs(store.suite())
        except Exception:  # noqa: BLE001 - a run without a readable suite keeps what it recorded
            inputs = []
        changed: dict[str, str] = {}
        for item in inputs:
            mask = item.mask
            if mask is None or mask.data is None or item.id not in used:
                continue
            if mask.sha256 not in used[item.id]:
                changed[item.id] = f"{mask.source}: mask changed since the run used it (image {item.id!r})"
                continue
            found[item.id] = write_image(Path(run_dir), mask.data, (mask.mime or "image/png").split("/")[-1])
        for input_id, sha, rel in conn.execute("SELECT input_id, mask_sha256, mask_path FROM run_masks"):
            if input_id not in found and sha in used.get(input_id, ()) and image_problem(Path(run_dir) / rel, sha) is None:
                found[input_id] = (sha, rel)
        problems += [f"{why}; " + ("measured with the copy the run kept" if input_id in found
                                   else "no kept-region SSIM for its images") for input_id, why in changed.items()]
        with conn:
            conn.executemany("INSERT OR REPLACE INTO run_masks VALUES (?, ?, ?)",
                             [(i, sha, rel) for i, (sha, rel) in found.items()])
    return found, problems


def write_fidelity(conn: sqlite3.Connection, clip_model: str, rows: Iterable[tuple]) -> int:
    """Replace this CLIP model's fidelity rows in one transaction."""
    _ensure_schema(conn)
    rows = list(rows)
    with conn:
        conn.execute("DELETE FROM fidelity WHERE clip_model = ?", (clip_model,))
        conn.executemany(
            "INSERT INTO fidelity (cell_id, image_index, clip_model, image_sha256, input_sha256, input_path, "
            "input_cosine, input_ssim, kept_ssim) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r[0], int(r[1]), clip_model, *r[2:]) for r in rows])
    return len(rows)


def fidelity_columns(frame: "pd.DataFrame", run_dir: str | Path) -> "pd.DataFrame":
    """The frame with `input_path`, `mask_path`, `input_cosine`, `input_ssim`, `kept_ssim` joined
    (for the CLIP model in its `clip_model` column) when the run has inputs; other runs' frames
    come back unchanged."""
    import pandas as pd

    if not has_inputs(frame):
        return frame
    model = str(frame["clip_model"].iloc[0]) if "clip_model" in frame.columns and len(frame) else ""
    with _fidelity_db(run_dir) as (_, conn):
        stored = pd.read_sql_query(
            "SELECT cell_id, image_index, image_sha256, input_path, input_cosine, input_ssim, kept_ssim "
            "FROM fidelity WHERE clip_model = ?", conn, params=(model,))
        paths = dict(conn.execute("SELECT input_id, input_path FROM run_inputs").fetchall())
        masks = dict(conn.execute("SELECT input_id, mask_path FROM run_masks").fetchall())
    out = frame.drop(columns=[c for c in ("input_path", "mask_path", *FIDELITY_COLUMNS) if c in frame.columns])
    stored["image_index"] = stored["image_index"].astype("int64")
    out = out.assign(image_index=out["image_index"].astype("int64")).merge(
        stored, on=["cell_id", "image_index", "image_sha256"], how="left")
    # the input's picture is known even where the image is not scored (yet)
    known = out["init_image"].map(paths)
    out["input_path"] = out["input_path"].fillna(known).fillna("").astype(str)
    out["mask_path"] = out["init_image"].map(masks).fillna("").astype(str)  # inpaint: the kept mask
    for col in FIDELITY_COLUMNS:
        out[col] = out[col].astype("float64")
    return out


def fidelity_by_strength(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Mean style shift and fidelity per (lora, provider, strength, scale) over prompts, seeds and
    inputs: the points of the report's fidelity-vs-style plot (one curve per strength, one point
    per scale), and what a (scale, strength) choice trades. Empty when the run has no inputs."""
    import pandas as pd

    from lorascope.evals.metrics import is_scorable

    columns = ["lora", "provider", "strength", "scale", "style_shift", "input_ssim", "input_cosine", "kept_ssim", "n"]
    if not has_inputs(frame) or "input_ssim" not in frame.columns or "style_shift" not in frame.columns:
        return pd.DataFrame(columns=columns)
    ok = frame[is_scorable(frame) & (frame["lora"] != "") & (frame["n_loras"] == 1)
               & frame["strength"].notna() & frame["style_shift"].notna() & frame["input_ssim"].notna()]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    grouped = ok.groupby(["lora", "provider", "strength", "scale"], sort=True)
    means = ["style_shift", "input_ssim", "input_cosine", *(["kept_ssim"] if "kept_ssim" in ok.columns else [])]
    out = grouped[means].mean()
    if "kept_ssim" not in out.columns:
        out["kept_ssim"] = float("nan")
    out["n"] = grouped.size()
    return out.reset_index()[columns]
