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

from lorascope.evals.fidelity import compute_fidelity, fidelity_columns, has_inputs, write_fidelity
from lorascope.evals.metrics import agreement_matrix, finite, image_metrics, is_scorable, texts_needed
from lorascope.evals.results import SCORE_VALUE_COLUMNS, write_scores
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
    fidelity: int = 0  # images given input_cosine/input_ssim (image-to-image runs)
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
    refetch: bool = False,
) -> ScoreSummary:
    """Score every stored image of the run with `clip` (see evals.scorer for the names),
    store the scores in run.db and re-export results.parquet with them. `refetch`: fetch
    https inputs again even where the run kept a copy (evals.fidelity)."""
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
            # img2img/inpaint: fidelity to the input beside style shift (same embeddings, same cache)
            fidelity, problems = compute_fidelity(run_dir, frame, embedder, computed.image_vectors, refetch=refetch)
            summary.problems += problems
            if fidelity or has_inputs(frame):
                summary.fidelity = write_fidelity(conn, embedder.model_id, fidelity)
        finally:
            conn.close()
        # with every stored plugin scorer's columns too, so a CLIP-only re-score keeps them
        summary.results_path, summary.frame = export_all_scores(run_dir, embedder.model_id)
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


@dataclass
class MultiScoreSummary:
    """`lorascope score --scorer a,b,...`: CLIP's summary (when CLIP was asked for) and, per
    plugin scorer, its model id and how many images were scored anew / found cached."""

    run_dir: Path
    clip: ScoreSummary | None
    scorers: list = field(default_factory=list)  # the Scorer instances, in the order asked
    computed: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    forward_passes: int = 0  # every scorer's model calls in this pass (CLIP included)
    problems: list[str] = field(default_factory=list)
    results_path: Path | None = None
    frame: "pd.DataFrame | None" = None


def score_run_with(
    run_dir: str | Path,
    scorers: str | None = None,
    clip: str | None = None,
    *,
    batch_size: int = 16,
    progress: bool = True,
    cache_path: Path | str | None = None,
    refetch: bool = False,
) -> MultiScoreSummary:
    """Score a run with several scorers in one pass over its images (each file opened once per
    batch, one progress bar), store each scorer's values and gains with its model id, then
    CLIP's own metrics from the embeddings that pass cached (no second forward pass), and
    re-export results.parquet with every stored scorer's columns."""
    from lorascope.evals.embedding_cache import EmbeddingCache
    from lorascope.evals.metrics import baseline_positions, gain_over_baseline
    from lorascope.evals.scorer_plugin import ScorerContext, parse_scorers, score_items
    from lorascope.evals.scorer_store import write_scorer_values
    from lorascope.harness.store import RunStore, image_problem

    run_dir = Path(run_dir)
    ctx = ScorerContext(cache=EmbeddingCache(cache_path), clip=clip, batch_size=batch_size)
    try:
        chosen = parse_scorers(scorers, ctx)
        summary = MultiScoreSummary(run_dir, None, chosen)
        with RunStore.open(run_dir) as store:
            frame = store.results_frame()
        ok = is_scorable(frame)
        items: dict[tuple[str, str], Path] = {}
        for sha, rel, prompt in frame.loc[ok, ["image_sha256", "image_path", "prompt"]].itertuples(index=False):
            path = run_dir / rel
            problem = image_problem(path, sha)  # scores are cached by sha256: trust only matching bytes
            if problem:
                note = f"{path}: image file {problem} (row left unscored; `lorascope run` on the suite restores it)"
                if note not in summary.problems:
                    summary.problems.append(note)
                continue
            items.setdefault((sha, str(prompt)), path)
        work = [(sha, path, prompt) for (sha, prompt), path in items.items()]
        values, info = _score_items_with_progress(chosen, work, batch_size, progress)
        summary.computed, summary.cached = info.computed, info.cached
        clip_scorer = next((s for s in chosen if s.name == "clip"), None)
        positions = baseline_positions(frame)  # shared by every scorer's gain
        ids = list(zip(frame["cell_id"], frame["image_index"].astype(int), frame["image_sha256"]))
        shas, prompts = frame["image_sha256"].tolist(), [str(p) for p in frame["prompt"]]
        for s in chosen:
            if s.name == "clip":
                continue
            per_row = pd_series([values[s.name].get(s.key(sha, p)) if keep else None
                                 for sha, p, keep in zip(shas, prompts, ok)], frame.index)
            gains = gain_over_baseline(frame, per_row, positions)
            rows = [(*key, finite(v), finite(g)) for key, v, g in zip(ids, per_row, gains) if finite(v) is not None]
            with RunStore.open(run_dir) as store:
                conn = store.connect()
            try:
                write_scorer_values(conn, s.name, s.model_id, s.label, s.random_weights, rows)
            finally:
                conn.close()
        if clip_scorer is not None:  # after the plugin scorers' rows: its export carries them too
            summary.clip = score_run(run_dir, embedder=clip_scorer.embedder, progress=False, refetch=refetch)
        summary.forward_passes = sum(s.forward_passes for s in chosen if s.name != "clip") + (
            clip_scorer.embedder.forward_passes if clip_scorer else 0)
        if summary.clip is not None:  # CLIP's work happened in the shared pass: count all of it
            summary.clip.forward_passes = clip_scorer.embedder.forward_passes
            summary.clip.embedded = _encoded(clip_scorer)
        if summary.clip is not None:
            summary.results_path, summary.frame = summary.clip.results_path, summary.clip.frame
        else:
            summary.results_path, summary.frame = export_all_scores(run_dir)
        return summary
    finally:
        ctx.cache.close()


def export_all_scores(run_dir: str | Path, clip: str | None = None) -> tuple[Path, "pd.DataFrame"]:
    """results.parquet = the run's rows + CLIP's score columns + every stored scorer's columns."""
    from lorascope.evals.results import scored_frame
    from lorascope.evals.scorer_store import scorer_columns
    from lorascope.harness.results import write_results

    frame, _ = scorer_columns(fidelity_columns(scored_frame(run_dir, clip), run_dir), run_dir)
    return write_results(frame, run_dir), frame


def pd_series(values: list, index) -> "pd.Series":
    import pandas as pd

    return pd.Series([np.nan if v is None else v for v in values], index=index, dtype=float)


def _encoded(clip_scorer) -> int:
    if clip_scorer is None or clip_scorer.embedder.model is None:
        return 0
    return clip_scorer.embedder.model.images_encoded


def _score_items_with_progress(chosen, work, batch_size: int, progress: bool):
    from lorascope.evals.scorer_plugin import score_items

    if not progress:
        return score_items(chosen, work, batch_size=batch_size)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    names = ", ".join(s.label for s in chosen)
    with Progress(TextColumn(f"scoring ({names})"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task("score", total=None)
        return score_items(chosen, work, batch_size=batch_size,
                           on_total=lambda n: bar.update(task, total=n),
                           progress=lambda n: bar.advance(task, n))
