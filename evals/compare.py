"""`compare BASELINE RUN`: did a provider (or a LoRA, or the local pipeline) change?

Cells are matched by (provider, lora, scales, prompt_id, seed, options, image index). For each
matched pair: exact equality (same sha256), CLIP image cosine, SSIM on a downscaled grayscale
copy (evals.ssim), the deltas of CLIPScore and style shift, and the latency and cost change.

Verdict per cell:
- `same`      identical bytes; or, for a provider that is not bit-deterministic, image cosine
              and SSIM at or above the `same_*` thresholds (encoder noise, not a change); or
              an unseeded cell (suite seed `null`: two random seeds, nothing to compare);
- `drifted`   the image changed but stays within every tolerance (for a deterministic
              provider such as the local diffusers pipeline, any byte change is at least drift);
- `regressed` image cosine, SSIM, CLIPScore or style shift beyond a tolerance, or the cell
              failed where the baseline succeeded;
- `missing`   in the baseline, not in the run (or not generated); `new`: only in the run.
Overall: `regressed` if any cell regressed (or a provider's median latency grew past
`latency_ratio`, when set), else `drifted` if anything changed, else `same`.

A comparison must see what the provider does today: when every image of the run came from
the shared generation cache (origin `cache`: no request was sent for it) or is one of the
baseline's own generations (same provider request id: a reused or copied run folder), the
run holds stored results, and comparing them proves nothing. Such a
report is `cache_only`, says so in its notes, and fails (`failed`) unless the caller allowed
it (`allow_cached=True`: `lorascope compare --allow-cached`, `--lorascope-allow-cached`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lorascope.evals.metrics import finite, hashable, input_key, is_scorable, is_unseeded, provider_stats, scale_key
from lorascope.evals.ssim import ssim_files

COMPARE_NAME = "compare.json"
VERDICTS = ("same", "drifted", "regressed", "damaged", "missing", "new")
#: The verdicts that mean a cell changed, worst first: the order `lorascope compare` lists
#: cells in, and the comparison report shows them in. `damaged`: an image file is missing or
#: no longer hashes to its stored sha256, so nothing can be said about the cell (it fails the
#: comparison like a regression; `lorascope run` restores the file).
CHANGED_VERDICTS = ("regressed", "damaged", "drifted", "missing", "new")


class UnrelatedRuns(ValueError):
    """The two runs do not answer the same question (different suites, no cell in common):
    comparing them would pass a CI job pointed at the wrong baseline."""


@dataclass
class Tolerances:
    """What counts as a regression (`--tolerance NAME=VALUE`)."""

    image_cosine: float = 0.90  # regressed below this CLIP image-image cosine
    ssim: float = 0.60  # regressed below this SSIM
    clip_score: float = 0.10  # regressed when CLIPScore drops by more than this (absolute)
    style_shift: float = 0.05  # regressed when style shift drops by more than this (absolute)
    latency_ratio: float | None = None  # regressed when a provider's median latency grows past x this
    same_cosine: float = 0.995  # non-deterministic providers: at/above both -> "same"
    same_ssim: float = 0.98

    @classmethod
    def parse(cls, items: list[str] | None) -> "Tolerances":
        """`["ssim=0.7", "clip_score=0.05"]` -> Tolerances; ValueError names the bad item."""
        tol = cls()
        known = {f for f in asdict(tol)}
        problems = []
        for item in items or []:
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in known:
                problems.append(f"--tolerance {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(known))}")
                continue
            try:
                setattr(tol, name, float(value))
            except ValueError:
                problems.append(f"--tolerance {item!r}: {value!r} is not a number")
        if problems:
            raise ValueError("\n".join(problems))
        return tol


@dataclass
class CellComparison:
    provider: str
    lora: str
    scales: str
    prompt_id: str
    seed: Any
    options: str
    image_index: int
    verdict: str
    reasons: list[str] = field(default_factory=list)
    exact: bool | None = None
    image_cosine: float | None = None
    ssim: float | None = None
    clip_score_delta: float | None = None
    style_shift_delta: float | None = None
    latency_delta_s: float | None = None
    cost_delta_usd: float | None = None
    baseline_image: str | None = None  # absolute paths, for humans and reports
    run_image: str | None = None
    baseline_status: str | None = None
    run_status: str | None = None
    #: an image-conditioned cell's denoising strength and input picture id ("" otherwise)
    strength: Any = ""
    init_image: Any = ""

    def label(self) -> str:
        what = f"{self.lora}@{self.scales}" if self.lora else "baseline (no LoRA)"
        opts = f" {self.options}" if self.options not in ("", "{}") else ""
        seed = "random" if self.seed in ("", None) else self.seed  # unseeded (suite seed null)
        inputs = "".join(f" {name}={value}" for name, value in (("image", self.init_image), ("strength", self.strength))
                         if value not in ("", None))
        return f"{self.provider} {what} prompt={self.prompt_id} seed={seed}{opts}{inputs}"


@dataclass
class CompareReport:
    baseline: str
    run: str
    clip_model: str
    tolerances: Tolerances
    cells: list[CellComparison]
    providers: dict[str, dict[str, Any]]
    overall: str = "same"
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: the run's images, and how many were not asked anew: supplied by the shared cache, or
    #: the baseline's own generations (same provider request id)
    run_images: int = 0
    cached_images: int = 0
    #: the caller accepts a run served entirely from the cache (it compares stored results)
    allow_cached: bool = False

    @property
    def regressed(self) -> bool:
        return self.overall == "regressed"

    @property
    def cache_only(self) -> bool:
        """Every image of the run came from the shared cache: nothing was asked anew."""
        return self.run_images > 0 and self.cached_images == self.run_images

    @property
    def failed(self) -> bool:
        """What a check acts on: a regression, or a cache-only run that was not allowed."""
        return self.regressed or (self.cache_only and not self.allow_cached)

    def provider_counts(self) -> dict[str, dict[str, int]]:
        """{provider: {verdict: cells}} over every verdict, providers sorted."""
        out: dict[str, dict[str, int]] = {}
        for cell in self.cells:
            out.setdefault(cell.provider, {v: 0 for v in VERDICTS})[cell.verdict] += 1
        return dict(sorted(out.items()))

    def headline(self) -> str:
        """One line: the overall verdict and the counts, e.g. `regressed: 3 regressed, 1 drifted
        of 56 cells`."""
        changed = ", ".join(f"{self.counts.get(v, 0)} {v}" for v in CHANGED_VERDICTS if self.counts.get(v))
        total = len(self.cells)
        text = f"{self.overall}: {changed or 'nothing changed'} of {total} cell{'s' if total != 1 else ''}"
        if self.cache_only:
            text += " (run served entirely from the cache" + (", allowed)" if self.allow_cached else ": not a check)")
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "run": self.run,
            "clip_model": self.clip_model,
            "tolerances": asdict(self.tolerances),
            "overall": self.overall,
            "counts": self.counts,
            "providers": self.providers,
            "notes": self.notes,
            "run_images": self.run_images,
            "cached_images": self.cached_images,
            "cache_only": self.cache_only,
            "allow_cached": self.allow_cached,
            "failed": self.failed,
            "cells": [_clean(asdict(c)) for c in self.cells],
        }


def worst_first(cells: list[CellComparison]) -> list[CellComparison]:
    """Changed cells first, worst verdict first (CHANGED_VERDICTS), then the unchanged ones;
    stable within a verdict."""
    rank = {v: i for i, v in enumerate((*CHANGED_VERDICTS, "same"))}
    return sorted(cells, key=lambda c: rank.get(c.verdict, len(rank)))


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and math.isnan(v):
            v = None
        elif isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.floating,)):
            v = None if math.isnan(float(v)) else float(v)
        elif v is pd.NA:
            v = None
        out[k] = v
    return out


def cell_key(row: dict[str, Any]) -> tuple:
    """What matches a baseline row with a run row: (provider, lora, scales, prompt id, seed,
    options, image index), plus (strength, input id) for an image-conditioned cell. A
    compare.json cell (a `CellComparison` as a dict) has the same fields, already normalised,
    and gives the same key as the rows it was made from."""
    return (
        row["provider"],
        row["lora"] or "",
        scale_key(row),
        row["prompt_id"],
        hashable(row["seed"]),
        hashable(row.get("options")),
        int(row.get("image_index") or 0),
        *input_key(row),
    )


def _delta(a: Any, b: Any) -> float | None:
    a, b = finite(a), finite(b)
    return None if a is None or b is None else b - a


def compare_frames(
    base: pd.DataFrame,
    run: pd.DataFrame,
    base_dir: Path,
    run_dir: Path,
    base_vectors: dict[str, np.ndarray],
    run_vectors: dict[str, np.ndarray],
    tolerances: Tolerances,
    base_damaged: dict[str, str] | None = None,
    run_damaged: dict[str, str] | None = None,
) -> list[CellComparison]:
    """The per-cell comparison of two scored results frames (see the module docstring).
    `*_damaged` (image_path -> why, from `ComputedScores.damaged`) name image files that are
    missing or fail their sha256: such a cell is `damaged`, never `same`."""
    base_damaged, run_damaged = base_damaged or {}, run_damaged or {}
    base_ok, run_ok = is_scorable(base), is_scorable(run)
    base_rows = {cell_key(r): (r, bool(ok)) for r, ok in zip(base.to_dict("records"), base_ok)}
    run_rows = {cell_key(r): (r, bool(ok)) for r, ok in zip(run.to_dict("records"), run_ok)}
    cells: list[CellComparison] = []
    for key in list(base_rows) + [k for k in run_rows if k not in base_rows]:
        provider, lora, scales, prompt_id, seed, options, idx, *inputs = key
        cell = CellComparison(provider, lora, scales, prompt_id, seed, options, idx, verdict="same")
        if inputs:
            cell.strength, cell.init_image = inputs
        b = base_rows.get(key)
        r = run_rows.get(key)
        if b is not None:
            cell.baseline_status = b[0]["status"]
            if b[1]:
                cell.baseline_image = str(base_dir / b[0]["image_path"])
        if r is not None:
            cell.run_status = r[0]["status"]
            if r[1]:
                cell.run_image = str(run_dir / r[0]["image_path"])
        if r is None:
            cell.verdict, cell.reasons = "missing", ["not in the run"]
        elif b is None:
            cell.verdict, cell.reasons = "new", ["not in the baseline"]
        elif not r[1]:
            if b[1]:
                error = r[0].get("error") or r[0]["status"]
                cell.verdict = "regressed" if r[0]["status"] == "failed" else "missing"
                cell.reasons = [f"no image now ({error}); the baseline had one"]
            else:
                cell.reasons = ["no image in either run"]
        elif not b[1]:
            cell.verdict, cell.reasons = "drifted", [f"has an image now; the baseline had none ({b[0]['status']})"]
        elif b[0]["image_path"] in base_damaged or r[0]["image_path"] in run_damaged:
            cell.verdict = "damaged"
            cell.reasons = [f"{side} image {damage}: {where}" for side, damage, where in (
                ("baseline", base_damaged.get(b[0]["image_path"]), cell.baseline_image),
                ("run", run_damaged.get(r[0]["image_path"]), cell.run_image)) if damage]
        else:
            _compare_images(cell, b[0], r[0], base_vectors, run_vectors, tolerances)
        cells.append(cell)
    return cells


def _compare_images(
    cell: CellComparison,
    b: dict[str, Any],
    r: dict[str, Any],
    base_vectors: dict[str, np.ndarray],
    run_vectors: dict[str, np.ndarray],
    tol: Tolerances,
) -> None:
    cell.latency_delta_s = _delta(b.get("latency_s"), r.get("latency_s"))
    cell.cost_delta_usd = _delta(b.get("cost_usd"), r.get("cost_usd"))
    cell.clip_score_delta = _delta(b.get("clip_score"), r.get("clip_score"))
    cell.style_shift_delta = _delta(b.get("style_shift"), r.get("style_shift"))
    cell.exact = b["image_sha256"] == r["image_sha256"]
    if cell.exact:
        cell.image_cosine, cell.ssim = 1.0, 1.0
        cell.reasons = ["identical image (same sha256)"]
        return
    if is_unseeded(b) or is_unseeded(r):
        cell.reasons = ["unseeded: each run drew its own random seed, so the pictures are not compared"]
        return
    absent = [p for p in (cell.baseline_image, cell.run_image) if not p or not Path(p).is_file()]
    if absent:
        cell.verdict = "missing"
        cell.reasons = [f"image file missing on disk: {', '.join(str(p) for p in absent)}"]
        return
    bv, rv = base_vectors.get(b["image_sha256"]), run_vectors.get(r["image_sha256"])
    if bv is not None and rv is not None:
        cell.image_cosine = float(np.dot(bv, rv))
    cell.ssim = ssim_files(cell.baseline_image, cell.run_image)  # type: ignore[arg-type]
    reasons: list[str] = []
    if cell.image_cosine is not None and cell.image_cosine < tol.image_cosine:
        reasons.append(f"image cosine {cell.image_cosine:.4f} < {tol.image_cosine}")
    if cell.ssim < tol.ssim:
        reasons.append(f"SSIM {cell.ssim:.4f} < {tol.ssim}")
    if cell.clip_score_delta is not None and cell.clip_score_delta < -tol.clip_score:
        reasons.append(f"CLIPScore {cell.clip_score_delta:+.4f} (tolerance -{tol.clip_score})")
    if cell.style_shift_delta is not None and cell.style_shift_delta < -tol.style_shift:
        reasons.append(f"style shift {cell.style_shift_delta:+.4f} (tolerance -{tol.style_shift})")
    if reasons:
        cell.verdict, cell.reasons = "regressed", reasons
        return
    deterministic = is_deterministic(cell.provider)
    close = (cell.image_cosine is None or cell.image_cosine >= tol.same_cosine) and cell.ssim >= tol.same_ssim
    summary = f"cosine {cell.image_cosine if cell.image_cosine is not None else float('nan'):.4f}, SSIM {cell.ssim:.4f}"
    if close and not deterministic:
        cell.verdict, cell.reasons = "same", [f"bytes differ, pictures match ({summary})"]
    elif deterministic:
        cell.verdict, cell.reasons = "drifted", [f"deterministic provider returned different bytes ({summary})"]
    else:
        cell.verdict, cell.reasons = "drifted", [f"changed within tolerance ({summary})"]


@lru_cache(maxsize=None)
def is_deterministic(provider: str) -> bool:
    """Whether a provider promises the same bytes for the same request (its class says so:
    `Provider.deterministic`); a provider this machine doesn't know makes no such promise."""
    from lorascope.harness.providers import provider_class

    try:
        return bool(provider_class(provider).deterministic)
    except (KeyError, ImportError):
        return False


def provider_changes(base: pd.DataFrame, run: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per provider: images, median latency and mean cost per image (evals.metrics'
    provider_stats of each run), before and after; None where a run has no such number."""
    sides = {"baseline": provider_stats(base), "run": provider_stats(run)}
    # versions and endpoints over the cells both runs hold: a run of fewer cells (no LoRA
    # cells, say) uses fewer endpoints without anything having changed
    base_keys = [cell_key(r) for r in base.to_dict("records")]
    run_keys = [cell_key(r) for r in run.to_dict("records")]
    common = set(base_keys) & set(run_keys)
    base_common = base[[k in common for k in base_keys]]
    run_common = run[[k in common for k in run_keys]]
    out: dict[str, dict[str, Any]] = {}
    for provider in sorted(set(base["provider"]) | set(run["provider"])):
        entry: dict[str, Any] = {}
        for name, stats in sides.items():
            known = provider in stats.index
            entry[f"{name}_images"] = int(stats.at[provider, "images"]) if known else 0
            entry[f"{name}_latency_median_s"] = finite(stats.at[provider, "latency_median"]) if known else None
            for part in ("queue", "inference"):  # the provider's own figures, where it reports them
                entry[f"{name}_{part}_median_s"] = finite(stats.at[provider, f"{part}_median"]) if known else None
            entry[f"{name}_cost_per_image_usd"] = finite(stats.at[provider, "cost_per_image"]) if known else None
        b, r = entry["baseline_latency_median_s"], entry["run_latency_median_s"]
        entry["latency_ratio"] = (r / b) if b and r is not None else None
        for column in ("model_version", "endpoint"):  # what the provider said it ran, per side
            entry[f"baseline_{column}s"] = _distinct(base_common, provider, column)
            entry[f"run_{column}s"] = _distinct(run_common, provider, column)
        out[provider] = entry
    return out


def _distinct(frame: pd.DataFrame, provider: str, column: str) -> list[str]:
    """The non-empty values of `column` among a provider's rows, sorted."""
    if column not in frame.columns:
        return []
    values = frame.loc[frame["provider"] == provider, column].dropna().astype(str)
    return sorted({v for v in values if v})


def version_notes(providers: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence per provider whose model version or endpoint differs between the runs: the
    most likely cause of whatever else changed (a Replicate model's new version, a local
    pipeline's new weights, a host's renamed endpoint), said in words before the cells."""
    notes = []
    for provider, info in providers.items():
        for column, what in (("model_version", "model version"), ("endpoint", "endpoint")):
            before, after = info.get(f"baseline_{column}s") or [], info.get(f"run_{column}s") or []
            if before and after and before != after:
                notes.append(f"{provider}: the {what} changed ({_short(before)} → {_short(after)}); "
                             "the run's images come from the new one")
    return notes


def _short(values: list[str]) -> str:
    return ", ".join(v if len(v) <= 24 else f"{v[:12]}…{v[-6:]}" for v in values)


def compare_runs(
    baseline_dir: str | Path,
    run_dir: str | Path,
    *,
    clip: str | None = None,
    tolerances: Tolerances | None = None,
    progress: bool = True,
    write: bool = True,
    allow_unrelated: bool = False,
    allow_cached: bool = False,
) -> CompareReport:
    """Score both runs in memory (embeddings through the cache; neither run.db is written),
    compare them cell by cell, and write compare.json into the run folder. A run whose every
    image came from the shared cache makes a `cache_only` report, failed unless
    `allow_cached`."""
    from lorascope.evals.scorer import Embedder
    from lorascope.evals.scoring import compute_scores

    baseline_dir, run_dir = Path(baseline_dir), Path(run_dir)
    tolerances = tolerances or Tolerances()
    if not allow_unrelated:
        check_related(baseline_dir, run_dir)
    clip = clip or default_clip_for(baseline_dir, run_dir)
    embedder = Embedder.open(clip)
    try:
        base = compute_scores(baseline_dir, embedder, progress=progress)
        run = compute_scores(run_dir, embedder, progress=progress)
    finally:
        embedder.close()
    cells = compare_frames(base.frame, run.frame, baseline_dir, run_dir, base.image_vectors, run.image_vectors, tolerances,
                           base.damaged, run.damaged)
    if not allow_unrelated and not _common_cells(base.frame, run.frame):
        raise UnrelatedRuns(f"{baseline_dir} and {run_dir} have no cell in common (every cell is only in one of them); "
                            "is this the right baseline? Pass --allow-unrelated to compare them anyway")
    report = CompareReport(
        baseline=str(baseline_dir),
        run=str(run_dir),
        clip_model=embedder.model_id,
        tolerances=tolerances,
        cells=cells,
        providers=provider_changes(base.frame, run.frame),
        allow_cached=allow_cached,
    )
    report.notes += version_notes(report.providers) + base.summary.problems + run.summary.problems
    report.run_images, report.cached_images = cache_provenance(run.frame, base.frame)
    if report.cache_only:
        report.notes.insert(0, cache_only_message(report))
    elif report.cached_images:
        report.notes.append(
            f"{report.cached_images} of {report.run_images} images of the run were not asked anew (from the "
            "shared cache, or the baseline's own generations)"
        )
    report.counts = {v: sum(1 for c in cells if c.verdict == v) for v in VERDICTS}
    slow = []
    if tolerances.latency_ratio is not None:
        for provider, info in report.providers.items():
            ratio = info.get("latency_ratio")
            if ratio is not None and ratio > tolerances.latency_ratio:
                slow.append(provider)
                report.notes.append(
                    f"{provider}: median latency x{ratio:.2f} (tolerance x{tolerances.latency_ratio})"
                )
    if report.counts["damaged"]:
        report.notes.append(f"{report.counts['damaged']} cell(s) have a damaged or missing image file, so the comparison "
                            "cannot vouch for them; `lorascope run SUITE --out DIR` restores them (from the shared "
                            "cache, or by asking the provider again)")
    if report.counts["regressed"] or report.counts["damaged"] or slow:
        report.overall = "regressed"
    elif any(report.counts[v] for v in ("drifted", "missing", "new")):
        report.overall = "drifted"
    if write:
        write_compare_json(report, run_dir)
    return report


def check_related(baseline_dir: Path, run_dir: Path) -> None:
    """Raise `UnrelatedRuns` when the two runs were made from differently named suites."""
    from lorascope.harness.store import RunStore

    names = []
    for run in (baseline_dir, run_dir):
        with RunStore.open(run) as store:
            names.append(store.get_meta("suite_name") or _suite_name(store.get_meta("suite_text")))
    if None not in names and names[0] != names[1]:
        raise UnrelatedRuns(f"{baseline_dir} is a run of suite {names[0]!r} and {run_dir} of suite {names[1]!r}; "
                            "is this the right baseline? Pass --allow-unrelated to compare them anyway")


def _common_cells(base: pd.DataFrame, run: pd.DataFrame) -> int:
    """How many cells (by `cell_key`) both runs hold."""
    keys = {cell_key(r) for r in base.to_dict("records")}
    return sum(1 for r in run.to_dict("records") if cell_key(r) in keys)


def _suite_name(text: str | None) -> str | None:
    """The stored suite's `name:` (None if it cannot be read: then only the cells decide)."""
    if not text:
        return None
    from lorascope.harness.suite import SuiteError, parse_suite

    try:
        return parse_suite(text).name
    except SuiteError:
        return None


def cache_provenance(frame: pd.DataFrame, baseline: pd.DataFrame | None = None) -> tuple[int, int]:
    """(images, images not asked anew) of a run's results frame. Not asked anew: the
    generation came from the shared cache (origin `cache`), or it is one of the baseline's
    own generations (same provider and provider request id: a run folder reused or copied
    from the baseline, whose stored results would be compared with themselves)."""
    ok = is_scorable(frame)
    rows = frame.loc[ok]
    reused = pd.Series(False, index=rows.index)
    if "origin" in rows:
        reused |= rows["origin"].astype(str) == "cache"
    if baseline is not None and "request_id" in rows and "request_id" in baseline:
        base_rows = baseline.loc[is_scorable(baseline)]
        theirs = {(p, str(r)) for p, r in zip(base_rows["provider"], base_rows["request_id"]) if _known_id(r)}
        reused |= pd.Series([(p, str(r)) in theirs for p, r in zip(rows["provider"], rows["request_id"])],
                            index=rows.index)
    return int(ok.sum()), int(reused.sum())


def _known_id(value: Any) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float) and math.isnan(value)) \
        and str(value) != ""


def cache_only_message(report: CompareReport) -> str:
    """Why a cache-only comparison is no check, and the two ways out (CLI and pytest)."""
    verdict = "allowed" if report.allow_cached else "this comparison fails"
    return (
        f"all {report.run_images} images of {report.run} came from the shared generation cache or are the "
        f"baseline's own generations: no request reached a provider for this comparison, so stored results were "
        f"compared with the baseline, not what the provider does "
        f"today; {verdict}. Generate anew with `lorascope run SUITE --out {report.run} --fresh` (the pytest "
        f"plugin does so by default when comparing, unless --lorascope-reuse), or compare stored results on "
        f"purpose with --allow-cached (pytest: --lorascope-allow-cached)"
    )


def default_clip_for(*run_dirs: Path) -> str | None:
    """The CLIP model the runs were last scored with (baseline first); None: the default."""
    import sqlite3

    from lorascope.evals.results import scored_models

    for run_dir in run_dirs:
        db = run_dir / "run.db"
        if not db.is_file():
            continue
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            models = scored_models(conn) if _has_table(conn, "score_runs") else []
        finally:
            conn.close()
        if models:
            return models[0][1]
    return None


def _has_table(conn: Any, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def write_compare_json(report: CompareReport, run_dir: Path) -> Path:
    target = run_dir / COMPARE_NAME
    tmp = run_dir / f".{COMPARE_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(report.to_json(), indent=2, default=str), encoding="utf-8")
    os.replace(tmp, target)
    return target
