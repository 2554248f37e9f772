"""`results.parquet`: one row per image, derived from run.db (delete it and re-export).

Columns (docs/harness.md has the full list): provider, lora ('' = the no-LoRA baseline,
'+'-joined ids for a stack), scale (the first LoRA's scale; NaN for the baseline), scales
('+'-joined, matching lora), prompt_id, prompt (as written, without triggers),
final_prompt, seed, status, error, image_path (relative to the run folder), image_sha256,
width, height, latency_s, cost_usd, cost_source, fingerprint, cell_id, options (JSON),
endpoint, model_version, task_id, and a few more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lorascope.harness.store import RunStore

if TYPE_CHECKING:
    import pandas as pd

RESULTS_NAME = "results.parquet"


def export_results(run_dir: str | Path) -> Path:
    """Write `<run_dir>/results.parquet` atomically from run.db; returns its path."""
    run_dir = Path(run_dir)
    with RunStore.open(run_dir) as store:
        frame = store.results_frame()
    return write_results(frame, run_dir)


def write_results(frame: "pd.DataFrame", run_dir: str | Path) -> Path:
    """Replace `<run_dir>/results.parquet` with `frame` atomically: a reader never sees a
    half-written file, and a crash leaves the previous one. Later stages (evals) call this to
    add their columns, so the file stays one derived table."""
    target = Path(run_dir) / RESULTS_NAME
    tmp = target.with_name(f".{RESULTS_NAME}.{os.getpid()}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
