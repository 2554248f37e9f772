"""Eval runs driven from Python (and from the pytest plugin): run a suite through the store,
score it, hand back a `ScoredRun`; compare against a stored baseline.

Runs go into a persistent folder (one per suite), so a second pytest session finds every
generation already stored and sends nothing, and the embeddings cache spares the scorer.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from lorascope.evals.compare import CompareReport, Tolerances
    from lorascope.evals.recommend import Recommendation
    from lorascope.evals.scoring import ScoreSummary
    from lorascope.harness.suite import Suite
    from lorascope.registry.models import LoraEntry


class MissingProviderKeys(RuntimeError):
    """Every provider the suite asks for lacks its API key; the message names the variables."""


@dataclass
class ScoredRun:
    """A run folder, its scored results frame and what produced it."""

    suite_name: str
    run_dir: Path
    frame: "pd.DataFrame"
    clip_model: str
    entries: dict[str, "LoraEntry"]
    run_summary: Any = None
    score_summary: "ScoreSummary | None" = None
    skipped_providers: dict[str, str] = field(default_factory=dict)

    @property
    def providers(self) -> list[str]:
        return sorted(self.frame["provider"].unique())

    def select(self, *, lora: str | None = None, scale: float | None = None, provider: str | None = None) -> "pd.DataFrame":
        frame = self.frame
        if lora is not None:
            frame = frame[frame["lora"] == lora]
        if scale is not None:
            frame = frame[(frame["scale"] - scale).abs() < 1e-9]
        if provider is not None:
            frame = frame[frame["provider"] == provider]
        return frame

    def baseline_rows(self, provider: str | None = None) -> "pd.DataFrame":
        return self.select(lora="", provider=provider)

    def recommended_scale(self, lora: str) -> float:
        """The catalogue's recommended scale (what the LoRA's author or an earlier run said)."""
        return self.entries[lora].scale.recommended

    def recommendation(self, lora: str, provider: str | None = None, **rule: float) -> "Recommendation":
        """The scale this run measures for `lora` on `provider` (evals.recommend's rule over
        these scores; `target_fraction=`, `clip_tolerance=` adjust it). `.scale` is None when
        no scale qualifies (`.reason` says why). With several providers, name one."""
        from lorascope.evals.recommend import recommend_scales

        found = [r for r in recommend_scales(self.frame, self.entries, **rule) if r.lora == lora]
        if provider is not None:
            found = [r for r in found if r.provider == provider]
        if not found:
            raise KeyError(f"no recommendation for {lora!r}{' on ' + provider if provider else ''} in {self.run_dir} "
                           f"(its LoRAs: {', '.join(sorted(x for x in self.frame['lora'].unique() if x)) or 'none'}; "
                           f"providers: {', '.join(self.providers)})")
        if len(found) > 1:
            raise ValueError(f"{lora!r} is measured on {', '.join(r.provider for r in found)}: pass provider=")
        return found[0]

    def image(self, row: Any) -> Path:
        return self.run_dir / str(row["image_path"])

    def describe(self, row: Any) -> str:
        """One row as a person reads it: which LoRA, scale, provider, prompt, seed; the image."""
        what = f"{row['lora']} @ {row['scale']:g}" if row["lora"] else "no-LoRA baseline"
        return (f"{what} on {row['provider']}, prompt {row['prompt_id']!r} seed {row['seed']} "
                f"(image {self.image(row) if row.get('image_path') else 'none: ' + str(row.get('error') or row['status'])})")


def missing_keys(suite: "Suite", providers: list[str] | None = None) -> dict[str, str]:
    """{provider: reason} for the hosted providers of `suite` whose API key variable is unset."""
    from lorascope.harness.providers import provider_class

    out = {}
    for spec in suite.providers:
        if providers and spec.name not in providers:
            continue
        try:
            cls = provider_class(spec.name)
        except Exception as exc:  # unknown provider: the runner reports it properly
            out[spec.name] = f"unknown provider ({exc})"
            continue
        var = getattr(cls, "env_key_var", None)
        if var and not os.environ.get(var) and not spec.settings.get("api_key"):
            out[spec.name] = f"{var} is not set"
    return out


def run_and_score(
    suite_path: str | Path,
    runs_root: Path,
    *,
    providers: list[str] | None = None,
    clip: str | None = None,
    scorers: str | None = None,
    fresh: bool = False,
    name: str | None = None,
    skip_missing_keys: bool = True,
    **run_kwargs: Any,
) -> ScoredRun:
    """Run `suite_path` into `runs_root/<name or suite name>` (resuming what is stored),
    score it with `clip` (and the plugin scorers named in `scorers`, as `lorascope score
    --scorer`: their `<name>` and `<name>_gain` columns join the frame), and return it."""
    from lorascope.evals.scoring import score_run, score_run_with
    from lorascope.harness.runner import run_suite
    from lorascope.harness.store import RunStore
    from lorascope.harness.suite import load_suite

    suite = load_suite(suite_path)
    wanted = providers or [p.name for p in suite.providers]
    skipped = missing_keys(suite, wanted) if skip_missing_keys else {}
    usable = [p for p in wanted if p not in skipped]
    if not usable:
        raise MissingProviderKeys(
            f"suite {suite.name}: no provider can run here: "
            + "; ".join(f"{p}: {why}" for p, why in skipped.items())
        )
    run_dir = Path(runs_root) / (name or suite.name)
    from lorascope.evals.scorer import Embedder

    embedder = Embedder.open(clip)
    try:
        if _paid(suite, usable):
            embedder._model()  # no CLIP weights -> ScorerUnavailable before any money is spent
        summary = run_suite(suite, run_dir, providers=usable, fresh=fresh, progress=False, **run_kwargs)
        if getattr(summary, "fatal", None):
            raise RuntimeError(f"suite {suite.name}: run failed: {summary.fatal}")
        if getattr(summary, "problems", None):
            raise RuntimeError(f"suite {suite.name}: the grid did not validate:\n" + "\n".join(map(str, summary.problems)))
        score = score_run(run_dir, embedder=embedder, progress=False)
    finally:
        embedder.close()
    scored_frame = score.frame
    if scorers:
        scored_frame = score_run_with(run_dir, scorers, clip=clip, progress=False).frame
    with RunStore.open(run_dir) as store:
        entries = store.lora_entries()
    frame = scored_frame[scored_frame["provider"].isin(usable)].reset_index(drop=True)
    return ScoredRun(suite.name, run_dir, frame, score.clip_model, entries, summary, score, skipped)


def _paid(suite: "Suite", providers: list[str]) -> bool:
    """Whether any of these providers is a hosted (key-holding, paid) one."""
    from lorascope.harness.providers import provider_class

    for name in providers:
        try:
            if getattr(provider_class(name), "env_key_var", None):
                return True
        except Exception:
            return True
    return False


def copy_run(src: Path, dst: Path) -> Path:
    """Copy a run folder (run.db through SQLite's backup API, so a WAL is folded in; images;
    derived files) to `dst`, replacing what was there."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.copying-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    source = sqlite3.connect(src / "run.db")
    target = sqlite3.connect(tmp / "run.db")
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    if (src / "images").is_dir():
        shutil.copytree(src / "images", tmp / "images")
    for name in ("results.parquet",):
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst


def compare_with(
    baseline_dir: Path,
    scored: ScoredRun,
    *,
    clip: str | None = None,
    tolerances: "Tolerances | None" = None,
    allow_cached: bool = False,
) -> "CompareReport":
    """Compare a scored run with a baseline folder (see evals.compare.compare_runs)."""
    from lorascope.evals.compare import compare_runs

    label = scored.score_summary.clip_label if scored.score_summary else scored.clip_model
    return compare_runs(baseline_dir, scored.run_dir, clip=clip or label, tolerances=tolerances,
                        progress=False, allow_cached=allow_cached)
