"""Turning result rows into `Figure`s: thumbnails made once, URLs relative to the report,
captions from the stored scores. Shared by the run report and the comparison report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from lorascope.reports import fmt
from lorascope.reports.inputs import OK_STATUSES
from lorascope.reports.thumbs import THUMB_DIR, Thumb, ThumbFailure, make_thumbs, missing_count
from lorascope.reports.viewmodels import Figure


def asset_url(target: Path, report_dir: Path) -> str:
    """A relative URL from the report file's folder to `target` (percent-encoded)."""
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(report_dir))
    return quote(rel.replace(os.sep, "/"))


def row_ok(row: pd.Series | dict[str, Any]) -> bool:
    status = str(row.get("status") or "").lower()
    return status in OK_STATUSES and not fmt.is_missing(row.get("image_path")) and bool(row.get("image_path"))


def row_nsfw(row: pd.Series | dict[str, Any]) -> bool:
    value = row.get("nsfw")
    return not fmt.is_missing(value) and bool(value)


class ThumbIndex:
    """Thumbnails for every image a report shows, made in one parallel pass."""

    #: Show a progress bar when at least this many thumbnails must be made.
    PROGRESS_FROM = 200

    def __init__(self, report_dir: Path, thumb_dir: Path | None = None, progress: bool = False) -> None:
        self.report_dir = report_dir
        self.thumb_dir = thumb_dir or report_dir / THUMB_DIR
        self.progress = progress
        self._wanted: dict[Path, str | None] = {}
        self._made: dict[Path, Thumb | ThumbFailure] = {}

    def want(self, image: Path, sha256: str | None) -> None:
        if image not in self._made:
            self._wanted.setdefault(image, sha256)

    def make(self) -> None:
        items = list(self._wanted.items())
        todo = missing_count(items, self.thumb_dir) if self.progress else 0
        if todo >= self.PROGRESS_FROM:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("thumbnails"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("thumbnails", total=len(items))
                results = make_thumbs(items, self.thumb_dir, on_done=lambda: bar.advance(task))
        else:
            results = make_thumbs(items, self.thumb_dir)
        self._made.update({path: res for (path, _), res in zip(items, results)})
        self._wanted.clear()

    def get(self, image: Path) -> Thumb | ThumbFailure:
        if image not in self._made:
            self.want(image, None)
            self.make()
        return self._made[image]


def image_file(run_dir: Path, row: pd.Series | dict[str, Any]) -> Path:
    return run_dir / str(row.get("image_path"))


def sha_of(row: pd.Series | dict[str, Any]) -> str | None:
    value = row.get("image_sha256")
    return None if fmt.is_missing(value) or not value else str(value)


def score_caption(row: pd.Series | dict[str, Any], baseline: bool) -> list[str]:
    caption = []
    if not fmt.is_missing(row.get("clip_score")):
        caption.append(f"CLIP {fmt.num(row.get('clip_score'), '.3f')}")
    if not baseline:
        if not fmt.is_missing(row.get("style_shift")):
            caption.append(f"shift {fmt.signed(row.get('style_shift'))}")
        if not fmt.is_missing(row.get("lora_effect")):
            caption.append(f"effect {fmt.num(row.get('lora_effect'), '.3f')}")
    if not fmt.is_missing(row.get("latency_s")):
        caption.append(fmt.seconds(row.get("latency_s")))
    return caption


def make_figure(
    row: pd.Series | dict[str, Any] | None,
    *,
    provider: str,
    run_dir: Path,
    thumbs: ThumbIndex,
    label: str,
    baseline: bool = False,
    recommended: bool = False,
    caption: list[str] | None = None,
) -> Figure:
    """The figure for one result row (None: the grid has no such generation)."""
    if row is None:
        return Figure(provider=provider, status="absent", reason="not in this run", alt=label, title=label)
    nsfw = row_nsfw(row)
    prompt = row.get("final_prompt") or row.get("prompt") or ""
    title = f"{provider} · {label}\n{prompt}"
    if not row_ok(row):
        error = row.get("error")
        reason = str(error) if not fmt.is_missing(error) and error else f"status: {row.get('status')}"
        return Figure(provider=provider, status="failed", reason=reason, alt=label, title=title, nsfw=nsfw,
                      recommended=recommended)
    image = image_file(run_dir, row)
    thumb = thumbs.get(image)
    if isinstance(thumb, ThumbFailure):
        return Figure(provider=provider, status="missing", reason=thumb.reason, alt=label, title=title,
                      nsfw=nsfw, recommended=recommended)
    return Figure(
        provider=provider,
        status="ok",
        thumb=asset_url(thumb.path, thumbs.report_dir),
        full=asset_url(image, thumbs.report_dir),
        thumb_width=thumb.width,
        thumb_height=thumb.height,
        alt=f"{provider}, {label}",
        caption=caption if caption is not None else score_caption(row, baseline),
        nsfw=nsfw,
        recommended=recommended,
        title=title,
    )
