"""`score_run`: embed a run's images and prompts, compute the per-image metrics, store them.

Idempotent: the embeddings come from the cache when seen before (no forward pass), the
metrics are recomputed from them every time (cheap, and always consistent with the current
images), and the scores replace the previous ones of the same model in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lorascope.evals.metrics import agreement_matrix, finite, image_metrics, is_scorable, texts_needed
from lorascope.evals.results import SCORE_VALUE_COLUMNS, export_scored_results, write_scores
from lorascope.evals.scorer import Embedder

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass
class ScoreSummary:
    run_dir: Path
    clip_model: str
    clip_label: str
    images: int = 0  # stored images scored
    embedded: int = 0  # images that needed a forward pass (cache misses)
    forward_passes: int = 0
    unscored: int = 0  # rows without an image (failed / pending)
    problems: list[str] = field(default_factory=list)
    results_path: Path | None = None
    #: the run's results with the score columns, as written to results.parquet
    frame: "pd.DataFrame | None" = None
    #: mean image-image cosine per provider pair over shared cells (None with one provider)
    agreement: "pd.DataFrame | None" = None


@dataclass
class ComputedScores:
    """A run's results frame with the score columns, and the image vectors behind them."""

    frame: "pd.DataFrame"
    image_vectors: dict[str, np.ndarray]
    summary: ScoreSummary
    #: image_path (relative) -> why its file cannot be trusted ("missing", "damaged: ...");
    #: such rows are left unscored, and a comparison never calls them the same image
    damaged: dict[str, str] = field(default_factory=dict)


def compute_scores(run_dir: str | Path, embedder: Embedder, *, progress: bool = True) -> ComputedScores:
    """Embed (through the cache) and compute every per-image metric; writes nothing."""
    from lorascope.harness.store import RunStore, image_problem

    run_dir = Path(run_dir)
    with RunStore.open(run_dir) as store:
        frame = store.results_frame()
        entries = store.lora_entries()
    summary = ScoreSummary(run_dir, embedder.model_id, embedder.spec.label())
    style_prompts = {i: e.style_prompt for i, e in entries.items()}

    ok = is_scorable(frame)
    summary.unscored = int((~ok).sum())
    items: dict[str, Path] = {}
    damaged: dict[str, str] = {}
    # the bytes are hashed before their embedding is looked up by sha256: an overwritten file
    # would otherwise keep the score (and the "same image" verdict) of what it used to be
    for sha, rel in frame.loc[ok, ["image_sha256", "image_path"]].itertuples(index=False):
        path = run_dir / rel
        problem = damaged.get(rel) or image_problem(path, sha)
        if problem:
            if rel not in damaged:
                damaged[rel] = problem
                summary.problems.append(f"{path}: image file {problem} (row left unscored; "
                                        "`lorascope run` on the suite restores it)")
            continue
        items.setdefault(sha, path)

    encoded_before = embedder.model.images_encoded if embedder.model else 0
    passes_before = embedder.forward_passes
    image_vectors = _embed_with_progress(embedder, list(items.items()), progress)
    summary.embedded = (embedder.model.images_encoded if embedder.model else 0) - encoded_before
    text_vectors = embedder.texts(texts_needed(frame, style_prompts))
    summary.forward_passes = embedder.forward_passes - passes_before

    metrics = image_metrics(frame, image_vectors, text_vectors, style_prompts)
    scored = frame.copy()
    for col in SCORE_VALUE_COLUMNS:
        scored[col] = metrics[col].astype("float64")
    scored.loc[~scored["image_sha256"].isin(image_vectors), list(SCORE_VALUE_COLUMNS)] = np.nan
    summary.images = int(scored["image_sha256"].isin(image_vectors).sum())
    if scored["provider"].nunique() > 1:
        summary.agreement = agreement_matrix(frame, image_vectors)
    return ComputedScores(scored, image_vectors, summary, damaged)


def score_run(
    run_dir: str | Path,
    clip: str | None = None,
    *,
    embedder: Embedder | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> ScoreSummary:
    """Score every stored image of the run with `clip` (see evals.scorer for the names),
    store the scores in run.db and re-export results.parquet with them."""
    from lorascope.harness.store import RunStore

    run_dir = Path(run_dir)
    own_embedder = embedder is None
    embedder = embedder or Embedder.open(clip, batch_size=batch_size)
    try:
        computed = compute_scores(run_dir, embedder, progress=progress)
        frame, summary = computed.frame, computed.summary
        rows = []
        for r in frame[frame["image_sha256"].isin(computed.image_vectors)].itertuples(index=False):
            values = [finite(getattr(r, c)) for c in SCORE_VALUE_COLUMNS]
            rows.append((r.cell_id, int(r.image_index), r.image_sha256, *values))
        with RunStore.open(run_dir) as store:
            conn = store.connect()
        try:
            summary.images = write_scores(conn, embedder.model_id, embedder.spec.label(), rows)
        finally:
            conn.close()
        summary.results_path, summary.frame = export_scored_results(run_dir, embedder.model_id)
        return summary
    finally:
        if own_embedder:
            embedder.close()


def _embed_with_progress(embedder: Embedder, items: list[tuple[str, Path]], progress: bool) -> dict:
    if not progress:
        return embedder.images(items)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cached = embedder.cache.get_many(embedder.model_id, "image", [k for k, _ in items])
    todo = len(items) - len(cached)
    if todo == 0:
        return cached
    with Progress(
        TextColumn(f"embedding images ({embedder.spec.label()})"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("embed", total=todo)
        return embedder.images(items, progress=lambda n: bar.advance(task, n), cached=cached)
