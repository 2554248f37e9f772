"""The run store: one folder per run, `run.db` (SQLite, WAL) the source of truth.

Write-ahead for money: a generation row is committed with status `intent` before its request
leaves, gets the provider's task id (status `submitted`) the moment the provider accepts it,
and the image and result when they arrive (`succeeded`), or its error (`failed`). Each step
is its own commit, so a SIGKILL at any point leaves a row that says exactly how far it got.

WAL with `synchronous=NORMAL`: every commit survives the process dying (SIGKILL, OOM, Ctrl-C);
only a power loss may drop the last few commits. That trade keeps a commit in the tens of
microseconds, so the event loop is never blocked on fsync for the database.

Images are content-addressed (`images/<sha256[:2]>/<sha256>.<ext>`) and written atomically
(temp file, fsync, rename), so a crash never leaves a half image under a real name.
Generations are keyed by fingerprint, not by cell: two cells asking for the same request
share one paid generation. `SharedCache` mirrors finished generations across runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from lorascope.harness.secrets import redact_text

if TYPE_CHECKING:
    import pandas as pd

    from lorascope.harness.grid import Cell
    from lorascope.harness.models import GenerationResult
    from lorascope.harness.suite import Suite
    from lorascope.registry.models import LoraEntry

DB_NAME = "run.db"
IMAGES_DIR = "images"
SCHEMA_VERSION = 1
STATUSES = ("pending", "intent", "submitted", "succeeded", "failed")
IN_FLIGHT = ("intent", "submitted")
#: Failures after which the provider may still hold the finished (and billed) task, so a
#: re-run collects it by task id instead of paying again: `storage` (the image arrived and
#: could not be written; always collected), and `provider_error` / `rate_limited` (polling
#: gave up on a transient error while the task ran on; collected once, so a task the
#: provider can no longer answer for does not block its cell forever).
COLLECTABLE_FAILURES = ("storage", "provider_error", "rate_limited")
#: A request that was in flight when the run stopped (Ctrl-C, or a crash closed on resume).
INTERRUPTED = "interrupted"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lora_entries (id TEXT PRIMARY KEY, entry_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY,
    ord INTEGER NOT NULL,
    provider TEXT NOT NULL,
    lora TEXT NOT NULL,
    scales TEXT NOT NULL,
    loras_json TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    final_prompt TEXT NOT NULL,
    seed INTEGER,
    options_json TEXT NOT NULL,
    axes_json TEXT NOT NULL,
    request_json TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model_version TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_fp ON cells(fingerprint);
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    provider TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('intent','submitted','succeeded','failed')),
    origin TEXT NOT NULL,          -- sent | resumed | cache
    task_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error_kind TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    submitted_at REAL,
    finished_at REAL,
    latency_s REAL,
    queue_s REAL,
    inference_s REAL,
    cost_usd REAL,
    cost_source TEXT,
    cost_basis TEXT,
    estimate_usd REAL,
    seed INTEGER,
    request_id TEXT,
    software_json TEXT,
    metadata_json TEXT
);
CREATE INDEX IF NOT EXISTS generations_fp ON generations(fingerprint, id);
CREATE INDEX IF NOT EXISTS generations_status ON generations(status);
CREATE TABLE IF NOT EXISTS images (
    generation_id INTEGER NOT NULL REFERENCES generations(id),
    idx INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    nsfw INTEGER,
    PRIMARY KEY (generation_id, idx)
);
"""


class StoreError(RuntimeError):
    """The run folder cannot be used (unwritable, not a run, disk full)."""


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    path: str  # relative to the run folder
    format: str
    width: int
    height: int
    nsfw: bool | None = None


@dataclass(frozen=True)
class GenerationRow:
    id: int
    fingerprint: str
    provider: str
    epoch: int
    attempt: int
    status: str
    origin: str
    task_id: str | None
    cancel_requested: bool
    error_kind: str | None

    @property
    def collectable(self) -> bool:
        """Worth polling again by its task id instead of sending the request again."""
        if not self.task_id:
            return False
        if self.status in IN_FLIGHT or self.error_kind == "storage":
            return True
        return self.error_kind in COLLECTABLE_FAILURES and self.origin != "resumed"


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the whole file or none: tmp, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def image_relpath(sha256: str, fmt: str) -> str:
    ext = {"jpeg": "jpg"}.get(fmt, fmt)
    return f"{IMAGES_DIR}/{sha256[:2]}/{sha256}.{ext}"


def write_image(root: Path, data: bytes, fmt: str) -> tuple[str, str]:
    """Store image bytes content-addressed under `root`; returns (sha256, relative path).
    A file already there is kept only if its bytes still match (a damaged one is replaced)."""
    sha = hashlib.sha256(data).hexdigest()
    rel = image_relpath(sha, fmt)
    target = root / rel
    if image_problem(target, sha) is not None:
        atomic_write(target, data)
        _verified.pop(str(target), None)
    return sha, rel


#: path -> (size, mtime_ns, sha256) of files whose bytes were hashed and matched, so one
#: process (a compare, then its report) reads each image once; a rewrite changes the stamp.
_verified: dict[str, tuple[int, int, str]] = {}


def image_problem(path: Path, sha256: str) -> str | None:
    """Why the image file at `path` cannot be trusted to be the one stored as `sha256`
    ("missing", or "damaged: ..."), or None when its bytes hash to it. Content-addressed
    files are never edited, so any difference is damage (a disk error, an overwrite)."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    stamp = (st.st_size, st.st_mtime_ns, sha256)
    if _verified.get(str(path)) == stamp:
        return None
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        return f"damaged: unreadable ({exc.strerror or exc})"
    if digest.hexdigest() != sha256:
        return f"damaged: its bytes hash to {digest.hexdigest()[:12]}..., not the stored {sha256[:12]}..."
    _verified[str(path)] = stamp
    return None


def link_or_copy(src: Path, dst: Path) -> None:
    """Put `src` at `dst` (hard link when on one filesystem, else an atomic copy)."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except FileExistsError:
        return
    except OSError:
        atomic_write(dst, src.read_bytes())


class RunStore:
    """One run folder. Methods commit immediately: each is one step of the write-ahead log."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection) -> None:
        self.run_dir = run_dir
        self.db_path = run_dir / DB_NAME
        self._conn = conn

    # ---- opening -------------------------------------------------------------------

    @staticmethod
    def folder_problem(run_dir: str | Path) -> str | None:
        """Why `create` would refuse `run_dir`, found without creating anything (the dry run
        must refuse what the real run refuses): a file in the way, or no write permission."""
        run_dir = Path(run_dir)
        probe = run_dir
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if not probe.is_dir():
            return f"cannot use run folder {run_dir}: {probe} is a file, not a folder"
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"cannot use run folder {run_dir}: {probe} is not writable"
        if probe == run_dir and (run_dir / DB_NAME).exists() and not os.access(run_dir / DB_NAME, os.R_OK | os.W_OK):
            return f"cannot use run folder {run_dir}: {run_dir / DB_NAME} is not readable and writable"
        return None

    @classmethod
    def create(cls, run_dir: str | Path) -> "RunStore":
        """Open the run folder, creating it (and run.db) if needed."""
        run_dir = Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / IMAGES_DIR).mkdir(exist_ok=True)
            probe = run_dir / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            conn = _connect(run_dir / DB_NAME)
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', '0')")
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (str(time.time()),))
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot use run folder {run_dir}: {getattr(exc, 'strerror', None) or exc}") from None
        return cls(run_dir, conn)

    @classmethod
    def open(cls, run_dir: str | Path) -> "RunStore":
        """Open an existing run folder (read and write); StoreError if it is not a run."""
        run_dir = Path(run_dir)
        db = run_dir / DB_NAME
        if not db.is_file():
            raise StoreError(f"{run_dir} is not a lorascope run (no {DB_NAME})")
        try:
            conn = _connect(db)
            conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {db}: {exc}; the file is damaged or not a lorascope run.db: restore it "
                             "from a copy, or run the suite again into a new --out folder") from None
        return cls(run_dir, conn)

    def connect(self) -> sqlite3.Connection:
        """A new connection to run.db (WAL) for stages that keep their own tables."""
        return _connect(self.db_path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- meta, suite, catalogue snapshot -------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, items: dict[str, str]) -> None:
        with self._tx():
            self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(items.items()))

    def check_owner(self, suite: "Suite") -> None:
        """A run folder belongs to one suite (by name): pointing `--out` at another suite's
        folder would replace its cells, so refuse before anything is written. The same suite
        edited (more scales, another provider) may resume into its folder."""
        owner = self.get_meta("suite_name")
        if owner is not None and owner != suite.name:
            raise StoreError(
                f"{self.run_dir} holds a run of suite {owner!r}, not {suite.name!r}: "
                "choose another --out (nothing was changed)"
            )

    def save_suite(self, suite: "Suite") -> None:
        self.check_owner(suite)
        self.set_meta({
            "suite_name": suite.name,
            # a suite may carry `api_key:`; run folders are shared, so the stored copy is masked
            "suite_text": redact_text(suite.text),
            "suite_path": str(suite.path.resolve()) if suite.path else "",
        })

    def suite(self) -> "Suite":
        """The suite as it was when the run last started (parsed from the stored text)."""
        from lorascope.harness.suite import parse_suite

        text = self.get_meta("suite_text")
        if text is None:
            raise StoreError(f"{self.db_path} holds no suite")
        path = self.get_meta("suite_path") or None
        return parse_suite(text, Path(path) if path else None)

    def save_entries(self, entries: Iterable["LoraEntry"]) -> None:
        rows = [(e.id, e.model_dump_json()) for e in entries]
        with self._tx():
            self._conn.executemany("INSERT OR REPLACE INTO lora_entries VALUES (?, ?)", rows)

    def lora_entries(self) -> dict[str, "LoraEntry"]:
        from lorascope.registry.models import LoraEntry

        rows = self._conn.execute("SELECT id, entry_json FROM lora_entries ORDER BY id").fetchall()
        return {i: LoraEntry.model_validate_json(j) for i, j in rows}

    def save_software(self, software: dict[str, str]) -> None:
        self.set_meta({"software": json.dumps(software, sort_keys=True)})

    # ---- cells ---------------------------------------------------------------------

    def save_cells(self, cells: list["Cell"], bound: dict[str, tuple[str, str, str]]) -> None:
        """Record the grid; `bound[cell_id]` = (endpoint, model_version, fingerprint)."""
        digest = hashlib.sha256()
        for cell in cells:
            digest.update(f"{cell.cell_id}\0{bound[cell.cell_id][2]}\n".encode())
        if self.get_meta("cells_digest") == digest.hexdigest():
            return  # the same grid as last time: nothing to rewrite
        rows = []
        for ord_, cell in enumerate(cells):
            endpoint, model_version, fp = bound[cell.cell_id]
            req = cell.request
            rows.append((
                cell.cell_id, ord_, cell.provider, cell.lora, cell.scales,
                json.dumps([[i, s] for i, s in cell.loras]), cell.prompt_id, cell.prompt, req.prompt,
                cell.seed, json.dumps(req.options, sort_keys=True, default=str),
                json.dumps(dict(cell.axes), sort_keys=True, default=str),
                req.model_dump_json(), endpoint, model_version, fp,
            ))
        with self._tx():
            self._conn.execute("DELETE FROM cells")
            self._conn.executemany("INSERT INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('cells_digest', ?)", (digest.hexdigest(),))

    # ---- epochs (`--fresh`) --------------------------------------------------------

    def planned_epoch(self, fresh: bool) -> int:
        """The epoch a run would write to (what `begin_epoch` returns), without opening it:
        `--fresh` opens a new one unless an earlier fresh run stopped before finishing."""
        epoch = int(self.get_meta("epoch", "0") or 0)
        return epoch + 1 if fresh and self.get_meta("fresh_open") != "1" else epoch

    def begin_epoch(self, fresh: bool) -> int:
        """The epoch new generations belong to. `--fresh` opens a new one, unless an earlier
        fresh run stopped before finishing: then it continues that one (so a crashed fresh
        run resumes instead of paying for everything again)."""
        epoch = self.planned_epoch(fresh)
        if fresh and self.get_meta("fresh_open") != "1":
            self.set_meta({"epoch": str(epoch), "fresh_open": "1"})
        return epoch

    def close_fresh_epoch(self) -> None:
        self.set_meta({"fresh_open": "0"})

    # ---- generations: reading ------------------------------------------------------

    def succeeded_fingerprints(self, min_epoch: int = 0) -> set[str]:
        rows = self._conn.execute(
            "SELECT DISTINCT fingerprint FROM generations WHERE status = 'succeeded' AND epoch >= ?", (min_epoch,)
        )
        return {r[0] for r in rows}

    def damaged(self, fingerprints: Iterable[str]) -> dict[str, str]:
        """fingerprint -> why its latest succeeded generation's image cannot be trusted
        (`image_problem`: missing, or bytes that no longer hash to the stored sha256)."""
        wanted = set(fingerprints)
        rows = self._conn.execute(
            "SELECT g.fingerprint, i.path, i.sha256 FROM generations g JOIN images i ON i.generation_id = g.id "
            "WHERE g.status = 'succeeded' AND g.id = (SELECT MAX(id) FROM generations "
            "WHERE fingerprint = g.fingerprint AND status = 'succeeded')"
        ).fetchall()
        out: dict[str, str] = {}
        for fingerprint, rel, sha in rows:
            if fingerprint in wanted and fingerprint not in out:
                problem = image_problem(self.run_dir / rel, sha)
                if problem:
                    out[fingerprint] = f"{rel}: {problem}"
        return out

    def leftovers(self) -> dict[str, GenerationRow]:
        """Per fingerprint, its latest generation when that one did not succeed: left in
        flight by a stopped run (`intent`, `submitted`) or `failed`. The runner decides from
        these whether to poll a task again by id, send again (and say so), or just retry."""
        rows = self._conn.execute(
            f"SELECT {_GEN_COLS} FROM generations g WHERE status != 'succeeded' "
            "AND id = (SELECT MAX(id) FROM generations WHERE fingerprint = g.fingerprint)"
        ).fetchall()
        return {r[1]: _gen_row(r) for r in rows}

    def attempts(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT fingerprint, MAX(attempt) FROM generations GROUP BY fingerprint"))

    # ---- generations: the write-ahead steps ----------------------------------------

    def record_intent(self, fingerprint: str, provider: str, epoch: int, attempt: int, estimate_usd: float | None,
                      origin: str = "sent") -> int:
        """Step 1, committed before the request leaves."""
        # one statement in autocommit mode is its own transaction: committed when it returns
        cur = self._conn.execute(
            "INSERT INTO generations (fingerprint, provider, epoch, attempt, status, origin, created_at, estimate_usd)"
            " VALUES (?,?,?,?, 'intent', ?, ?, ?)",
            (fingerprint, provider, epoch, attempt, origin, time.time(), estimate_usd),
        )
        return int(cur.lastrowid)

    def record_submitted(self, generation_id: int, task_id: str) -> None:
        """Step 2, the moment the provider accepted the task: from now on, resume by id."""
        self._conn.execute(
            "UPDATE generations SET status = 'submitted', task_id = ?, submitted_at = ? WHERE id = ?",
            (task_id, time.time(), generation_id),
        )

    def mark_resumed(self, generation_id: int) -> None:
        self._conn.execute("UPDATE generations SET origin = 'resumed' WHERE id = ?", (generation_id,))

    def record_cancel_requested(self, generation_id: int) -> None:
        self._conn.execute("UPDATE generations SET cancel_requested = 1 WHERE id = ?", (generation_id,))

    def record_success(self, generation_id: int, result: "GenerationResult", images: list[StoredImage],
                       latency_s: float) -> None:
        """Step 3: the images are on disk already; this commit makes them part of the run."""
        t = result.timings
        with self._tx():
            self._insert_images(generation_id, images)
            self._conn.execute(
                "UPDATE generations SET status = 'succeeded', finished_at = ?, latency_s = ?, queue_s = ?,"
                " inference_s = ?, cost_usd = ?, cost_source = ?, cost_basis = ?, seed = ?, request_id = ?,"
                " task_id = COALESCE(task_id, ?), software_json = ?, metadata_json = ?, error_kind = NULL,"
                " error_message = NULL WHERE id = ?",
                (time.time(), latency_s, t.queue_s, t.inference_s, result.cost.usd, result.cost.source,
                 result.cost.basis, result.seed, result.request_id, result.request_id,
                 json.dumps(result.software, sort_keys=True),
                 json.dumps(result.metadata, sort_keys=True, default=str), generation_id),
            )

    def record_failure(self, generation_id: int, kind: str, message: str, latency_s: float | None = None,
                       cost_usd: float | None = None, cost_source: str | None = None) -> None:
        self._conn.execute(
            "UPDATE generations SET status = 'failed', finished_at = ?, error_kind = ?, error_message = ?,"
            " latency_s = COALESCE(?, latency_s), cost_usd = ?, cost_source = ? WHERE id = ?",
            (time.time(), kind, message[:4000], latency_s, cost_usd, cost_source, generation_id),
        )

    def record_reuse(self, fingerprint: str, provider: str, epoch: int, attempt: int, result: dict[str, Any],
                     images: list[StoredImage]) -> int:
        """A generation an earlier run paid for (shared cache): one commit, origin `cache`."""
        now = time.time()
        cost = result.get("cost") or {}
        timings = result.get("timings") or {}
        with self._tx():
            cur = self._conn.execute(
                "INSERT INTO generations (fingerprint, provider, epoch, attempt, status, origin, created_at,"
                " finished_at, latency_s, queue_s, inference_s, cost_usd, cost_source, cost_basis, seed, request_id,"
                " task_id, software_json, metadata_json)"
                " VALUES (?,?,?,?, 'succeeded', 'cache', ?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (fingerprint, provider, epoch, attempt, now, now, timings.get("total_s"), timings.get("queue_s"),
                 timings.get("inference_s"), cost.get("usd"), cost.get("source"), cost.get("basis"),
                 result.get("seed"), result.get("request_id"), result.get("request_id"),
                 json.dumps(result.get("software") or {}, sort_keys=True),
                 json.dumps(result.get("metadata") or {}, sort_keys=True, default=str)),
            )
            gid = int(cur.lastrowid)
            self._insert_images(gid, images)
        return gid

    def write_image(self, data: bytes, fmt: str) -> tuple[str, str]:
        return write_image(self.run_dir, data, fmt)

    # ---- results -------------------------------------------------------------------

    def state_token(self) -> str:
        """Changes whenever anything results.parquet shows changes (cells or generations)."""
        gen = self._conn.execute(
            "SELECT MAX(id), COUNT(*), TOTAL(finished_at), TOTAL(length(status)), COUNT(task_id) FROM generations"
        ).fetchone()
        cells = self._conn.execute("SELECT COUNT(*), MAX(rowid), TOTAL(ord) FROM cells").fetchone()
        return json.dumps([list(gen), list(cells), self.get_meta("cells_digest")])

    def results_frame(self) -> "pd.DataFrame":
        """One row per image (a generation without an image: one row, empty image fields).

        Each cell shows its fingerprint's latest finished generation (else the latest one).
        Columns are documented in docs/harness.md.
        """
        import pandas as pd

        frame = pd.DataFrame.from_records(self.result_records(), columns=RESULT_COLUMNS)
        for col in RESULT_NULLABLE_INTS:
            frame[col] = frame[col].astype("Int64")
        for col in RESULT_FLOATS:
            frame[col] = frame[col].astype("float64")
        frame["nsfw"] = frame["nsfw"].astype("boolean")
        return frame

    def result_records(self) -> list[dict[str, Any]]:
        """`results_frame`'s rows as plain dicts (RESULT_COLUMNS), without pandas: the run's
        own export writes them with pyarrow alone (results.py)."""
        sql = """
        WITH latest AS (
            SELECT fingerprint,
                   COALESCE(MAX(CASE WHEN status IN ('succeeded','failed') THEN id END), MAX(id)) AS gid
            FROM generations GROUP BY fingerprint
        )
        SELECT c.cell_id, c.provider, c.lora, c.scales, c.loras_json, c.prompt_id, c.prompt, c.final_prompt,
               c.seed, c.options_json, c.axes_json, c.endpoint, c.model_version, c.fingerprint,
               g.id, g.status, g.error_kind, g.error_message, g.latency_s, g.queue_s, g.inference_s,
               g.cost_usd, g.cost_source, g.task_id, g.seed, g.origin, g.attempt, g.epoch,
               i.idx, i.path, i.sha256, i.width, i.height, i.format, i.nsfw, g.request_id
        FROM cells c
        LEFT JOIN latest l ON l.fingerprint = c.fingerprint
        LEFT JOIN generations g ON g.id = l.gid
        LEFT JOIN images i ON i.generation_id = g.id
        ORDER BY c.ord, i.idx
        """
        records = []
        for r in self._conn.execute(sql):
            loras = json.loads(r[4])
            error = f"{r[16]}: {r[17]}" if r[16] else ""
            axes_json, strength, init_image = _conditioning_axes(r[10])
            records.append({
                "cell_id": r[0],
                "provider": r[1],
                "lora": r[2],
                "scale": float(loras[0][1]) if loras else float("nan"),
                "scales": r[3],
                "n_loras": len(loras),
                "prompt_id": r[5],
                "prompt": r[6],
                "final_prompt": r[7],
                "seed": r[8],
                "status": r[15] or "pending",
                "error": error,
                "error_kind": r[16] or "",
                "image_index": r[28] if r[28] is not None else 0,
                "image_path": r[29] or "",
                "image_sha256": r[30] or "",
                "width": r[31],
                "height": r[32],
                "image_format": r[33] or "",
                "nsfw": None if r[34] is None else bool(r[34]),
                "latency_s": r[18],
                "queue_s": r[19],
                "inference_s": r[20],
                "cost_usd": r[21],
                "cost_source": r[22] or "",
                "fingerprint": r[13],
                "options": r[9],
                "axes": axes_json,
                "strength": strength,
                "init_image": init_image,
                "endpoint": r[11],
                "model_version": r[12],
                "task_id": r[23] or "",
                "returned_seed": r[24],
                "origin": r[25] or "",
                "attempt": r[26],
                "generation_id": r[14],
                "request_id": r[35] or "",
            })
        return records

    # ---- internals -----------------------------------------------------------------

    def _tx(self) -> "_Tx":
        return _Tx(self._conn)

    def _insert_images(self, generation_id: int, images: list[StoredImage]) -> None:
        """The image rows of one generation (inside the caller's transaction)."""
        self._conn.executemany(
            "INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?,?,?)",
            [(generation_id, i, im.sha256, im.path, im.format, im.width, im.height,
              None if im.nsfw is None else int(im.nsfw)) for i, im in enumerate(images)],
        )


RESULT_COLUMNS = [
    "cell_id", "provider", "lora", "scale", "scales", "n_loras", "prompt_id", "prompt", "final_prompt", "seed",
    "status", "error", "error_kind", "image_index", "image_path", "image_sha256", "width", "height",
    "image_format", "nsfw", "latency_s", "queue_s", "inference_s", "cost_usd", "cost_source", "fingerprint",
    "options", "axes", "endpoint", "model_version", "task_id", "returned_seed", "origin", "attempt",
    "generation_id", "request_id", "strength", "init_image",
]


#: results columns and their pandas dtypes (the rest: text, or int64 for n_loras/image_index)
RESULT_NULLABLE_INTS = ("seed", "returned_seed", "width", "height", "attempt", "generation_id")  # Int64
RESULT_FLOATS = ("scale", "latency_s", "queue_s", "inference_s", "cost_usd", "strength")  # float64
RESULT_BOOLS = ("nsfw",)  # boolean
RESULT_INTS = ("n_loras", "image_index")  # int64, never missing


def _conditioning_axes(axes_json: str) -> tuple[str, float | None, str | None]:
    """An image-conditioned cell's `strength` and input image id (grid axes `strength` and
    `image`) as their own columns; the rest stays in `axes` (provider option sweeps)."""
    if '"strength"' not in axes_json and '"image"' not in axes_json:
        return axes_json, None, None
    axes = json.loads(axes_json)
    strength = axes.pop("strength", None)
    image = axes.pop("image", None)
    return json.dumps(axes, sort_keys=True), (float(strength) if strength is not None else None), image

_GEN_COLS = "id, fingerprint, provider, epoch, attempt, status, origin, task_id, cancel_requested, error_kind"


def _gen_row(r: tuple) -> GenerationRow:
    return GenerationRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9])


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one write-ahead step."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


# ---- the shared cross-run cache -------------------------------------------------------


def default_cache_dir() -> Path:
    env = os.environ.get("LORASCOPE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lorascope"


class SharedCache:
    """fingerprint -> images + result, shared by every run on this machine (or team volume).

    Only successful, seeded generations go in (an unseeded one is not a reproducible answer
    to its request); errors never do. Images are content-addressed like a run's.

    Rows are group-committed (up to PUT_BATCH rows or PUT_DELAY_S seconds, and at every
    read and `close`): one commit per image cost ~0.5 ms of CPU per cell in worker threads
    that compete with the event loop. The cache is a mirror of what runs already recorded
    (their run.db holds the paid result), so a crash that loses the last uncommitted rows
    loses nothing paid: those generations are just not offered to other run folders.
    """

    #: rows committed together; and the longest a row waits for its commit while a run goes on
    PUT_BATCH = 64
    PUT_DELAY_S = 1.0

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._conn: sqlite3.Connection | None = None
        self.disabled_reason: str | None = None
        self._lock = threading.RLock()  # puts run in worker threads; one connection
        self._pending: list[tuple[str, str, str, str, float]] = []

    def _db(self) -> sqlite3.Connection | None:
        with self._lock:
            return self._open_locked()

    def _open_locked(self) -> sqlite3.Connection | None:
        if self._conn is None and self.disabled_reason is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                conn = _connect(self.root / "cache.db")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS generations (fingerprint TEXT PRIMARY KEY, provider TEXT NOT NULL,"
                    " result_json TEXT NOT NULL, images_json TEXT NOT NULL, created_at REAL NOT NULL)"
                )
                self._conn = conn
            except (OSError, sqlite3.Error) as exc:
                self.disabled_reason = f"shared cache at {self.root} unusable: {exc}"
        return self._conn

    def lookup_many(self, fingerprints: Iterable[str]) -> set[str]:
        """Which of these fingerprints the cache holds (one query per 500)."""
        conn = self._db()
        if conn is None:
            return set()
        self.flush()
        fps = list(fingerprints)
        found: set[str] = set()
        for i in range(0, len(fps), 500):
            chunk = fps[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in conn.execute(f"SELECT fingerprint FROM generations WHERE fingerprint IN ({marks})", chunk))
        return found

    def get(self, fingerprint: str) -> tuple[dict[str, Any], list[StoredImage]] | None:
        conn = self._db()
        if conn is None:
            return None
        self.flush()
        row = conn.execute("SELECT result_json, images_json FROM generations WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None:
            return None
        images = [StoredImage(**im) for im in json.loads(row[1])]
        if any(image_problem(self.root / im.path, im.sha256) for im in images):
            return None  # missing or damaged: not an answer (the request is sent again)
        return json.loads(row[0]), images

    def put(self, fingerprint: str, provider: str, result: "GenerationResult", images: list[StoredImage],
            run_dir: Path) -> None:
        conn = self._db()
        if conn is None:
            return
        try:
            for im in images:
                link_or_copy(run_dir / im.path, self.root / im.path)
            payload = result.model_dump(mode="json", exclude={"images"})
            row = (fingerprint, provider, json.dumps(payload, sort_keys=True),
                   json.dumps([im.__dict__ for im in images]), time.time())
        except OSError as exc:
            self.disabled_reason = f"shared cache at {self.root} unusable: {exc}"
            return
        with self._lock:
            self._pending.append(row)
            if len(self._pending) >= self.PUT_BATCH or row[4] - self._pending[0][4] >= self.PUT_DELAY_S:
                self._flush_locked()

    def flush(self) -> None:
        """Commit the rows `put` has gathered (one transaction)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending or self._conn is None:
            return
        rows, self._pending = self._pending, []
        try:
            with _Tx(self._conn):
                self._conn.executemany("INSERT OR REPLACE INTO generations VALUES (?,?,?,?,?)", rows)
        except sqlite3.Error as exc:
            self.disabled_reason = f"shared cache at {self.root} unusable: {exc}"

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def integrity_ok(db_path: Path) -> bool:
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
