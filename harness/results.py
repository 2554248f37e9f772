"""`results.parquet`: one row per image, derived from run.db (delete it and re-export).

Columns (docs/harness.md has the full list): provider, lora ('' = the no-LoRA baseline,
'+'-joined ids for a stack), scale (the first LoRA's scale; NaN for the baseline), scales
('+'-joined, matching lora), prompt_id, prompt (as written, without triggers),
final_prompt, seed, status, error, image_path (relative to the run folder), image_sha256,
width, height, latency_s, cost_usd, cost_source, fingerprint, cell_id, options (JSON),
endpoint, model_version, task_id, and a few more.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lorascope.harness.store import (
    RESULT_BOOLS, RESULT_COLUMNS, RESULT_FLOATS, RESULT_INTS, RESULT_NULLABLE_INTS, RunStore,
)

if TYPE_CHECKING:
    import pandas as pd

RESULTS_NAME = "results.parquet"


def export_results(run_dir: str | Path) -> Path:
    """Write `<run_dir>/results.parquet` atomically from run.db; returns its path.

    Written with pyarrow alone, column types and pandas metadata as `frame.to_parquet` writes
    `RunStore.results_frame()` (a test holds the two equal), because importing pandas costs
    ~0.3-0.5 s of CPU that `lorascope run` would otherwise spend on every run that changed."""
    run_dir = Path(run_dir)
    with RunStore.open(run_dir) as store:
        records = store.result_records()
    if records and not any(_infinite(r[name]) for r in records for name in RESULT_FLOATS):
        return _replace_atomically(run_dir, lambda tmp: _write_records(records, tmp))
    with RunStore.open(run_dir) as store:  # an empty grid, or an infinite float: too rare for a second path
        return write_results(store.results_frame(), run_dir)


def _infinite(value: float | None) -> bool:
    return value is not None and math.isinf(value)


def _write_records(records: list[dict[str, Any]], path: Path) -> None:
    """Write finite records as `frame.to_parquet` would. The table is built by pyarrow's
    JSON reader against an explicit schema: `pyarrow.array` on Python lists imports pandas
    (to look for pandas objects), the JSON reader does not."""
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    rows = []
    for record in records:
        row = dict(record)
        for name in RESULT_FLOATS:
            if row[name] is not None and math.isnan(row[name]):
                row[name] = None  # NaN is written as missing, as pandas does
        rows.append(json.dumps(row, allow_nan=False))
    fields, described = [], []
    for name in RESULT_COLUMNS:
        if name in RESULT_NULLABLE_INTS:
            typ, pandas_type, numpy_type = pa.int64(), "int64", "Int64"
        elif name in RESULT_INTS:
            typ, pandas_type, numpy_type = pa.int64(), "int64", "int64"
        elif name in RESULT_FLOATS:
            typ, pandas_type, numpy_type = pa.float64(), "float64", "float64"
        elif name in RESULT_BOOLS:
            typ, pandas_type, numpy_type = pa.bool_(), "bool", "boolean"
        elif all(r[name] is None for r in records):  # pandas keeps an all-missing column as object
            typ, pandas_type, numpy_type = pa.null(), "empty", "object"
        else:
            typ, pandas_type, numpy_type = pa.large_string(), "object", "str"
        fields.append(pa.field(name, typ))
        described.append({"name": name, "field_name": name, "pandas_type": pandas_type, "numpy_type": numpy_type,
                          "metadata": None})
    schema = pa.schema(fields)
    table = pa_json.read_json(
        io.BytesIO("\n".join(rows).encode()),
        read_options=pa_json.ReadOptions(block_size=max(1 << 20, 2 * max(len(r) for r in rows))),
        parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
    )
    pandas_meta = {"index_columns": [], "column_indexes": [], "columns": described, "attributes": {},
                   "creator": {"library": "pyarrow", "version": pa.__version__},
                   "pandas_version": _pandas_version()}
    if not table.schema.equals(schema):  # the reader keeps the explicit schema's order and types; else
        table = table.select(RESULT_COLUMNS).cast(schema)  # (imports pyarrow.compute, ~50 ms)
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)


def _pandas_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pandas")
    except PackageNotFoundError:
        return ""


def write_results(frame: "pd.DataFrame", run_dir: str | Path) -> Path:
    """Replace `<run_dir>/results.parquet` with `frame` atomically: a reader never sees a
    half-written file, and a crash leaves the previous one. Later stages (evals) call this to
    add their columns, so the file stays one derived table."""
    return _replace_atomically(Path(run_dir), lambda tmp: frame.to_parquet(tmp, index=False))


def _replace_atomically(run_dir: Path, write: Callable[[Path], None]) -> Path:
    target = run_dir / RESULTS_NAME
    tmp = target.with_name(f".{RESULTS_NAME}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
