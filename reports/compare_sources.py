"""Reading a baseline-vs-run comparison: the evals stage's verdicts (RUN/compare.json, made
by `lorascope compare` or, when missing, for another baseline or stale, by evals' compare API now),
joined with both runs' rows so each side shows its own numbers and its image from its own
folder (compare.json's absolute paths break when folders move; the rows' relative paths
do not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from lorascope.reports import fmt
from lorascope.reports.errors import ReportError
from lorascope.reports.figures import row_ok
from lorascope.reports.howto import uses_random_weights
from lorascope.reports.inputs import CompareCellData, CompareData, CompareMetricData, CompareSide

SIDE_METRICS = ("clip_score", "style_shift", "lora_effect", "latency_s", "cost_usd")


def _rows_by_key(frame: pd.DataFrame) -> dict[tuple, dict[str, Any]]:
    """Rows keyed the way evals.compare matches cells (and keys compare.json's cells)."""
    from lorascope.evals.compare import cell_key

    return {cell_key(row): row for row in frame.to_dict("records")}


def _check_run(run_dir: Path) -> None:
    """A clear error when the folder is not a run (before any comparing work)."""
    from lorascope.reports.sources import open_store

    open_store(run_dir).close()


def _frame(run_dir: Path, clip_model: str | None) -> pd.DataFrame:
    """The run's rows with the scores of the CLIP model the comparison used (NaN where the
    run was not scored with it): each side's numbers and the deltas come from one model."""
    from lorascope.evals.results import scored_frame

    return scored_frame(run_dir, clip_model)


def _recorded(baseline_dir: Path, run_dir: Path) -> dict[str, Any] | None:
    """RUN/compare.json when it was made against this baseline, else None."""
    from lorascope.evals.compare import COMPARE_NAME

    path = run_dir / COMPARE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: unreadable ({exc}); re-run `lorascope compare {baseline_dir} {run_dir}`") from None
    recorded = Path(str(data.get("baseline", "")))
    return data if recorded.resolve() == baseline_dir.resolve() else None


def _compare_now(baseline_dir: Path, run_dir: Path) -> dict[str, Any]:
    """evals' comparison, made now (and written to RUN/compare.json)."""
    from lorascope.evals.compare import compare_runs
    from lorascope.evals.scorer import ScorerUnavailable

    try:
        return compare_runs(baseline_dir, run_dir, progress=True, write=True).to_json()
    except ScorerUnavailable as exc:
        # like `lorascope compare`: missing CLIP weights are a usage problem (exit 2), and
        # the message says how to fix it
        raise ReportError(f"cannot compare {baseline_dir} and {run_dir}: {exc}") from None


def _image_name(path: Any) -> str | None:
    return Path(str(path)).name if path and not fmt.is_missing(path) else None


def _is_stale(data: dict[str, Any], base_rows: dict[tuple, dict[str, Any]],
              run_rows: dict[tuple, dict[str, Any]]) -> bool:
    """Whether compare.json no longer describes the runs: a cell appeared or went, or an
    image changed since (images are content-addressed, so a new picture has a new name)."""
    from lorascope.evals.compare import cell_key

    cells = {cell_key(c): c for c in data.get("cells", [])}
    if set(cells) != set(base_rows) | set(run_rows):
        return True
    for key, c in cells.items():
        for recorded, rows in ((c.get("baseline_image"), base_rows), (c.get("run_image"), run_rows)):
            row = rows.get(key)
            now = row.get("image_path") if row is not None and row_ok(row) else None
            if _image_name(recorded) != _image_name(now):
                return True
    return False


def _inputs_text(cell: dict[str, Any]) -> str:
    """An image-conditioned compare.json cell's input and strength in words ("" otherwise)."""
    parts = []
    if cell.get("init_image") not in (None, ""):
        parts.append(f"image {cell['init_image']}")
    strength = fmt.number(cell.get("strength"))
    if strength is not None:
        parts.append(f"strength {strength:g}")
    return ", ".join(parts)


def _side(row: dict[str, Any] | None, run_dir: Path, status: str | None, fallback_image: str | None) -> CompareSide:
    if row is None:
        image = Path(fallback_image) if fallback_image and Path(fallback_image).is_file() else None
        return CompareSide(image=image, status=status or "absent")
    has_image = row_ok(row)
    error = row.get("error")
    return CompareSide(
        image=run_dir / str(row["image_path"]) if has_image else None,
        sha256=str(row.get("image_sha256") or "") or None,
        status=str(row.get("status") or status or ""),
        error="" if fmt.is_missing(error) else str(error or ""),
        latency_s=fmt.number(row.get("latency_s")),
        cost_usd=fmt.number(row.get("cost_usd")),
    )


def load_compare_data(baseline_dir: Path, run_dir: Path) -> CompareData:
    from lorascope.evals.compare import cell_key

    baseline_dir, run_dir = Path(baseline_dir), Path(run_dir)
    _check_run(baseline_dir)
    _check_run(run_dir)
    data = _recorded(baseline_dir, run_dir)
    fresh = data is None
    if fresh:
        data = _compare_now(baseline_dir, run_dir)

    def frames(data: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
        clip_model = str(data.get("clip_model") or "") or None
        return _frame(baseline_dir, clip_model), _frame(run_dir, clip_model)

    base_frame, run_frame = frames(data)
    base_rows, run_rows = _rows_by_key(base_frame), _rows_by_key(run_frame)
    if not fresh and _is_stale(data, base_rows, run_rows):  # a run changed after `lorascope compare`
        data = _compare_now(baseline_dir, run_dir)
        base_frame, run_frame = frames(data)
        base_rows, run_rows = _rows_by_key(base_frame), _rows_by_key(run_frame)
    cells = []
    for c in data.get("cells", []):
        key = cell_key(c)
        b, r = base_rows.get(key), run_rows.get(key)
        metrics = []
        json_deltas = {"clip_score": c.get("clip_score_delta"), "style_shift": c.get("style_shift_delta"),
                       "latency_s": c.get("latency_delta_s"), "cost_usd": c.get("cost_delta_usd")}
        for name in SIDE_METRICS:
            bv, rv = fmt.number((b or {}).get(name)), fmt.number((r or {}).get(name))
            # evals scores both runs in memory to compare them: its delta holds even when
            # the current run was never `lorascope score`d (its stored scores are empty)
            delta = fmt.number(json_deltas.get(name))
            if delta is None and bv is not None and rv is not None:
                delta = rv - bv
            if rv is None and bv is not None and delta is not None:
                rv = bv + delta
            if bv is None and rv is not None and delta is not None:
                bv = rv - delta
            if bv is None and rv is None and delta is None:
                continue
            metrics.append(CompareMetricData(name=name, baseline=bv, current=rv, delta=delta))
        for name in ("image_cosine", "ssim"):
            value = fmt.number(c.get(name))
            if value is not None:
                metrics.append(CompareMetricData(name=name, current=value))
        verdict = str(c.get("verdict") or "")
        cells.append(CompareCellData(
            provider=str(c.get("provider")), lora=str(c.get("lora") or ""), scale=str(c.get("scales") or ""),
            prompt_id=str(c.get("prompt_id") or ""), prompt=str((r or b or {}).get("prompt") or ""),
            seed=fmt.seed(c.get("seed")), verdict=verdict, inputs=_inputs_text(c),
            reasons=[str(x) for x in c.get("reasons") or []],
            baseline=_side(b, baseline_dir, c.get("baseline_status"), c.get("baseline_image")),
            current=_side(r, run_dir, c.get("run_status"), c.get("run_image")),
            metrics=metrics,
        ))
    settings = {"CLIP model": data.get("clip_model", "")}
    counts = data.get("counts") or {}
    if counts:
        settings["Verdicts"] = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    for note in data.get("notes") or []:
        settings.setdefault("Notes", "")
        settings["Notes"] = (settings["Notes"] + "; " if settings["Notes"] else "") + str(note)
    tol = data.get("tolerances") or {}
    if tol:
        settings["Tolerances"] = ", ".join(f"{k}={v}" for k, v in tol.items() if v is not None)
    overall = str(data.get("overall") or "")
    if data.get("cache_only") and not data.get("allow_cached"):  # evals.compare: nothing was asked anew
        overall += " — no check: the run was served entirely from the cache (see Notes)"
    return CompareData(
        baseline_dir=baseline_dir, run_dir=run_dir, overall=overall,
        settings=settings, cells=cells,
        random_weights=uses_random_weights(run_frame) or uses_random_weights(base_frame),
    )
