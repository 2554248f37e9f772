"""The run report's grids as data: every generation once, with its place on each axis.

A real run has more axes than a page has room for (providers, option sweeps, stacks,
prompts, seeds, scales), so the page does not fix a layout: report.js lets the reader put
any axis on rows or columns and pick a value (or "all") for the others, and builds only
the slice on screen. This module decides what the axes are, their order, which image sits
where, and the default view of each grid; the page only looks things up.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

from lorascope.reports import fmt
from lorascope.reports.figures import ThumbIndex, asset_url, make_figure, sha_of
from lorascope.reports.thumbs import ThumbFailure
from lorascope.reports.viewmodels import (
    GridAxis,
    GridData,
    GridImage,
    GridInput,
    GridSection,
    GridValue,
    GridViewState,
)

BASELINE = "baseline"
#: Columns a run may carry for image-conditioned requests (shown as axes when present).
EXTRA_AXES = (("strength", "strength"), ("init_image", "image"))
#: The axis whose values are input pictures (their ids); report.js shows the picture at the
#: head of the rows (or columns) that start from it.
IMAGE_AXIS = "init_image"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


def _seed_sort(seed: str) -> tuple[int, int | str]:
    try:
        return (0, int(seed))
    except ValueError:
        return (1, seed)


def _scale_sort(key: str) -> tuple[int, float, str]:
    if key == BASELINE:
        return (0, -math.inf, key)
    try:
        return (1, float(key), key)
    except ValueError:
        return (2, math.inf, key)  # a stack's "0.5+0.8"


def options_of(row: dict[str, Any]) -> dict[str, str]:
    """A row's provider option axes (the suite's sweeps) as text values."""
    value = row.get("axes")
    if fmt.is_missing(value) or not value:
        value = row.get("options")
    if fmt.is_missing(value) or value in ("", "{}", "null", None):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def extra_value(row: dict[str, Any], column: str) -> str | None:
    value = row.get(column)
    if fmt.is_missing(value) or value == "":
        return None
    return fmt.scale(value) if isinstance(value, (int, float)) else str(value)


class _Axes:
    """Axis ids in page order, each with its ordered value keys, labels and titles."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.labels: dict[str, str] = {}
        self.values: dict[str, dict[str, GridValue]] = {}

    def add(self, axis: str, label: str) -> None:
        if axis not in self.values:
            self.order.append(axis)
            self.labels[axis] = label
            self.values[axis] = {}

    def value(self, axis: str, key: str, label: str | None = None, title: str = "") -> None:
        self.values[axis].setdefault(key, GridValue(key=key, label=label if label is not None else key, title=title))

    def sort(self, axis: str, key) -> None:
        items = self.values[axis]
        self.values[axis] = {k: items[k] for k in sorted(items, key=key)}

    def build(self) -> list[GridAxis]:
        return [GridAxis(id=a, label=self.labels[a], values=list(self.values[a].values())) for a in self.order]


def build_grid(
    records: list[dict[str, Any]],
    *,
    run_dir: Path,
    thumbs: ThumbIndex,
    lora_order: list[str],
    prompt_order: list[str],
    recs: dict[tuple[str, str], float | None],
    rec_strengths: dict[tuple[str, str], float | None] | None = None,
    sections: list[tuple[str, str, dict[str, list[str]]]],
    inputs: dict[str, Path] | None = None,
    masks: dict[str, Path] | None = None,
) -> tuple[GridData, list[GridSection], GridSection | None]:
    """The grid data of a run: `records` are the deduplicated result rows (one per grid
    position, with `column_key`, `variant`, `seed_key`); `sections` lists (lora, anchor,
    column marks) per LoRA; `inputs` maps an input image id to the run's stored copy.
    Returns the data, each LoRA's grid and the run-wide grid."""
    axes = _Axes()
    for axis, label in (("lora", "LoRA"), ("scale", "scale"), ("provider", "provider"),
                        ("prompt", "prompt"), ("seed", "seed")):
        axes.add(axis, label)
    for lora in lora_order:
        if lora:
            axes.value("lora", lora)
    axes.value("scale", BASELINE, "no LoRA (baseline)")
    prompts = {r["prompt_id"]: str(r.get("prompt") or "") for r in records}
    for pid in prompt_order:
        if pid in prompts:
            axes.value("prompt", pid, pid, prompts[pid])
    for row in records:
        if row["lora"]:
            axes.value("lora", row["lora"])
        axes.value("scale", row["column_key"], "no LoRA (baseline)" if row["column_key"] == BASELINE else None)
        axes.value("provider", row["provider"])
        axes.value("prompt", row["prompt_id"], row["prompt_id"], prompts[row["prompt_id"]])
        axes.value("seed", row["seed_key"])
        for name, value in options_of(row).items():
            axes.add(f"opt:{name}", name)
            axes.value(f"opt:{name}", value)
        for column, label in EXTRA_AXES:
            value = extra_value(row, column)
            if value is not None:
                axes.add(column, label)
                axes.value(column, value)
    axes.sort("scale", _scale_sort)
    axes.sort("seed", _seed_sort)

    index = {a: {k: i for i, k in enumerate(axes.values[a])} for a in axes.order}
    images = []
    for row in records:
        coords = {"lora": row["lora"] or None, "scale": row["column_key"], "provider": row["provider"],
                  "prompt": row["prompt_id"], "seed": row["seed_key"]}
        coords.update({f"opt:{k}": v for k, v in options_of(row).items()})
        coords.update({c: extra_value(row, c) for c, _ in EXTRA_AXES})
        at = [index[a][coords[a]] if coords.get(a) is not None else -1 for a in axes.order]
        images.append(_image(row, at, run_dir, thumbs, recs, rec_strengths or {}))

    data_axes = axes.build()
    lora_sections = [
        GridSection(anchor=anchor, locked={"lora": lora}, marks=marks,
                    default=default_view(data_axes, locked=("lora",)))
        for lora, anchor, marks in sections
    ]
    run_grid = None
    if len(axes.values["lora"]) > 1:
        run_grid = GridSection(anchor="all-loras", default=default_view(data_axes, run_wide=True))
    shown_inputs = {key: grid_input(key, (inputs or {}).get(key), thumbs, (masks or {}).get(key))
                    for key in axes.values.get(IMAGE_AXIS, {})}
    return (GridData(axes=data_axes, images=images, sections=[*lora_sections, *([run_grid] if run_grid else [])],
                     inputs=shown_inputs),
            lora_sections, run_grid)


def stored_sha(path: Path) -> str | None:
    """The sha256 a content-addressed copy is stored under (its file name, harness.store's
    `images/ab/<sha256>.<ext>`), so a damaged copy is shown as damaged, not as the input."""
    return path.stem if _SHA256.fullmatch(path.stem) else None


def grid_input(key: str, path: Path | None, thumbs: ThumbIndex, mask: Path | None = None) -> GridInput:
    """The input picture `key` as the grid shows it: its thumbnail (through the report's
    ThumbIndex, like every other image), full-size link, sha256, pixel size and title; or
    why it cannot be shown (the copy is made by `lorascope score`)."""
    label = f"input {key}"
    if path is None:
        return GridInput(status="missing", title=label,
                         reason="no stored copy yet: `lorascope score RUN` keeps one in the run")
    thumb = thumbs.get(path)
    if isinstance(thumb, ThumbFailure):
        return GridInput(status="missing", title=label, reason=thumb.reason)
    from PIL import Image

    from lorascope.registry.digest import sha256_file

    try:
        sha = stored_sha(path) or sha256_file(path)
        with Image.open(path) as picture:  # reads the header only
            size = f"{picture.width}×{picture.height} px"
    except OSError as exc:
        return GridInput(status="missing", title=label, reason=f"input unreadable ({type(exc).__name__}): {path.name}")
    shown_mask = None
    if mask is not None:  # inpaint: the mask beside its picture, shown the same way
        shown_mask = grid_input(key, mask, thumbs)
        shown_mask = shown_mask.model_copy(update={"title": f"mask of input {key}: white is repainted, black kept"
                                                   + (f" ({shown_mask.size})" if shown_mask.size else "")})
    return GridInput(status="ok", thumb=asset_url(thumb.path, thumbs.report_dir), full=asset_url(path, thumbs.report_dir),
                     w=thumb.width, h=thumb.height, sha=sha, size=size,
                     title=f"{label}: the picture these images start from ({size}, sha256 {sha[:16]})", mask=shown_mask)


def default_view(axes: list[GridAxis], locked: tuple[str, ...] = (), run_wide: bool = False) -> GridViewState:
    """The common question first: columns = scale (baseline first); rows = prompt x seed
    (the run-wide grid: one row per LoRA, first prompt and seed), or, in an image-to-image
    run sweeping strengths, rows = strength (scale x strength is the question there); one
    provider at a time; option sweeps side by side; any other axis at its first value."""
    sweeps_strength = any(a.id == "strength" and len(a.values) > 1 for a in axes)
    rows = ["lora"] if run_wide else (["strength"] if sweeps_strength else ["prompt", "seed"])
    cols = ["scale"]
    fixed = {}
    for axis in axes:
        if axis.id in rows or axis.id in cols or axis.id in locked or not axis.values:
            continue
        fixed[axis.id] = "*" if axis.id.startswith("opt:") else axis.values[0].key
    return GridViewState(rows=rows, cols=cols, fixed=fixed)


def _image(row: dict[str, Any], at: list[int], run_dir: Path, thumbs: ThumbIndex,
           recs: dict[tuple[str, str], float | None],
           rec_strengths: dict[tuple[str, str], float | None]) -> GridImage:
    baseline = row["lora"] == ""
    scale = row.get("scale_key")
    rec = recs.get((row["lora"], row["provider"]))
    recommended = not baseline and rec is not None and scale is not None and math.isclose(rec, scale)
    decided_at = rec_strengths.get((row["lora"], row["provider"]))
    if recommended and decided_at is not None:  # a strength sweep: the recommendation is one (scale, strength)
        strength = fmt.number(row.get("strength"))
        recommended = strength is not None and math.isclose(strength, decided_at)
    label = (f"no LoRA (baseline), {row['prompt_id']}, seed {row['seed_key']}" if baseline
             else f"{row['lora']} scale {row['column_key']}, {row['prompt_id']}, seed {row['seed_key']}")
    figure = make_figure(row, provider=row["variant"], run_dir=run_dir, thumbs=thumbs, label=label,
                         baseline=baseline, recommended=recommended)
    cost = row.get("cost_usd")
    return GridImage(
        at=at, status=figure.status if figure.status != "absent" else "missing", provider=row["variant"],
        thumb=figure.thumb, full=figure.full, w=figure.thumb_width, h=figure.thumb_height,
        sha=sha_of(row) or "", title=figure.title, caption=figure.caption,
        cost="" if fmt.is_missing(cost) else fmt.usd(cost), reason=figure.reason or "",
        nsfw=figure.nsfw, rec=recommended,
    )
