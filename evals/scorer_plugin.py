"""The scorer interface: images (and, for some, prompts) in, one number per image out.

A scorer is found by name: the built-ins below, or any package's `lorascope.scorers` entry
point (`name = "module:Class"`, a `Scorer` subclass), like providers. `--scorer NAME[:VARIANT]`
picks one; the variant is scorer-specific (`tiny-random` everywhere: the real architecture
at a small size with seeded random weights, for tests and the demo — its numbers mean nothing).

What a scorer promises:

- `model_id` names its weights exactly (scorer + weights hash or seed) WITHOUT loading the
  model: it keys the shared cache (evals.embedding_cache `scalar_scores`), so a re-score that
  finds every (model_id, image sha256[, prompt sha256]) there loads nothing.
- `needs_text`: whether the prompt is part of the score (then it is part of the cache key).
- `score(images, prompts)` scores one batch; `forward_passes` counts model calls.
- `random_weights`: True when the numbers carry no meaning (reports label them).

Nothing here imports torch: a scorer imports it in `load()`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

from lorascope.evals.embedding_cache import EmbeddingCache, text_key
from lorascope.plugins import load_target, plugin_targets

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

ENTRY_POINT_GROUP = "lorascope.scorers"
TINY = "tiny-random"

BUILTIN: dict[str, str] = {
    "clip": "lorascope.evals.scorer_clip:ClipScorer",
    "aesthetic": "lorascope.evals.scorer_aesthetic:AestheticScorer",
    "hpsv2": "lorascope.evals.scorer_hpsv2:HpsV2Scorer",
    "pickscore": "lorascope.evals.scorer_pickscore:PickScoreScorer",
}


@dataclass(frozen=True)
class ScorerContext:
    """What every scorer may use: the CLIP choice (`--clip`), the shared cache, the device."""

    cache: EmbeddingCache
    clip: str | None = None
    device: str | None = None
    batch_size: int = 16
    #: CLIP embedders by label, shared by the scorers of one pass (evals.scorer_clip)
    embedders: dict = field(default_factory=dict, compare=False, repr=False)


class Scorer(ABC):
    """One number per image. Subclasses set `name`, `needs_text`, `weights_help`."""

    name: ClassVar[str]
    needs_text: ClassVar[bool] = False
    #: what weights it needs and where they come from (shown by `lorascope score --help`)
    weights_help: ClassVar[str] = ""
    #: higher is better for every built-in; a plugin may say otherwise
    higher_is_better: ClassVar[bool] = True
    #: the `NAME:VARIANT` spellings it takes (None: plain `NAME`); empty: any variant
    variants: ClassVar[tuple[str | None, ...]] = ()

    def __init__(self, variant: str | None, ctx: ScorerContext) -> None:
        if self.variants and variant not in self.variants:
            known = " or ".join(self.name if v is None else f"{self.name}:{v}" for v in self.variants)
            raise ValueError(f"--scorer {self.name}:{variant}: unknown variant; use {known}")
        self.variant = variant
        self.ctx = ctx
        self.forward_passes = 0
        self.loads = 0
        self._loaded = False

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The weights, exactly; computed without loading the model."""

    @property
    def random_weights(self) -> bool:
        return self.variant == TINY

    @property
    def label(self) -> str:
        return f"{self.name}:{self.variant}" if self.variant else self.name

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()
            self._loaded = True
            self.loads += 1

    @abstractmethod
    def load(self) -> None:
        """Build or read the model; raise ScorerUnavailable with the fix when it cannot."""

    @abstractmethod
    def score_batch(self, shas: Sequence[str], images: Sequence["Image"], prompts: Sequence[str]) -> np.ndarray:
        """Scores for one batch (the model is loaded); `prompts` aligned with `images`."""

    def key(self, sha: str, prompt: str) -> str:
        return f"{sha}:{text_key(prompt)}" if self.needs_text else sha


@lru_cache(maxsize=1)
def _targets() -> dict[str, str]:
    return plugin_targets(ENTRY_POINT_GROUP, BUILTIN)


def available() -> list[str]:
    return sorted(_targets())


def scorer_class(name: str) -> "type[Scorer]":
    target = _targets().get(name)
    if target is None:
        raise ValueError(f"--scorer {name!r}: unknown scorer; known: {', '.join(available())}")
    return load_target(target)


def parse_scorers(text: str | Sequence[str] | None, ctx: ScorerContext) -> list[Scorer]:
    """`clip,aesthetic:tiny-random` -> scorer instances (unknown names listed at once)."""
    if text is None:
        parts = ["clip"]
    elif isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
    else:
        parts = [p.strip() for t in text for p in t.split(",") if p.strip()]
    unknown = [p for p in parts if p.partition(":")[0] not in _targets()]
    if unknown:
        raise ValueError(f"--scorer: unknown scorer(s) {', '.join(unknown)}; known: {', '.join(available())}")
    out: list[Scorer] = []
    for part in dict.fromkeys(parts):
        name, _, variant = part.partition(":")
        out.append(scorer_class(name)(variant or None, ctx))
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--scorer: {', '.join(dupes)} given twice with different variants; pick one per run")
    return out


@dataclass
class ScoringPass:
    """Counts of one pass over a run's images (what the CLI prints, what tests check)."""

    computed: dict[str, int] = field(default_factory=dict)  # scorer name -> newly scored
    cached: dict[str, int] = field(default_factory=dict)


def score_items(
    scorers: Sequence[Scorer],
    items: Sequence[tuple[str, Path, str]],
    *,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> tuple[dict[str, dict[str, float]], ScoringPass]:
    """Score (sha, path, prompt) items with every scorer in one pass over the images.

    Each image file is opened once per batch whatever the number of scorers; a scorer whose
    keys are all cached is never loaded. Returns {scorer name: {cache key: value}}."""
    from PIL import Image

    cache = scorers[0].ctx.cache if scorers else None
    values: dict[str, dict[str, float]] = {}
    todo: dict[str, set[int]] = {}
    info = ScoringPass()
    for s in scorers:
        keys = [s.key(sha, prompt) for sha, _, prompt in items]
        found = cache.get_scores(s.model_id, keys) if cache else {}
        values[s.name] = found
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # an image-only key once
        todo[s.name] = {i for k, i in first.items() if k not in found}
        info.cached[s.name] = len(first) - len(todo[s.name])
        info.computed[s.name] = 0
    total = sum(len(t) for t in todo.values())
    if on_total:
        on_total(total)
    if total == 0:
        return values, info
    for start in range(0, len(items), batch_size):
        idx = range(start, min(start + batch_size, len(items)))
        wanted = {s.name: [i for i in idx if i in todo[s.name]] for s in scorers}
        if not any(wanted.values()):
            continue
        opened: dict[int, Any] = {}
        for i in sorted({i for w in wanted.values() for i in w}):
            with Image.open(items[i][1]) as im:
                im.load()
                opened[i] = im.convert("RGB")
        for s in scorers:
            sel = wanted[s.name]
            if not sel:
                continue
            s.ensure_loaded()
            scores = s.score_batch([items[i][0] for i in sel], [opened[i] for i in sel], [items[i][2] for i in sel])
            new = {s.key(items[i][0], items[i][2]): float(v) for i, v in zip(sel, scores)}
            if cache:
                cache.put_scores(s.model_id, new)
            values[s.name].update(new)
            info.computed[s.name] += len(sel)
            if progress:
                progress(len(sel))
    return values, info
