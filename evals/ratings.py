"""From pairwise votes to decisions: Bradley-Terry strengths per (LoRA, provider, scale), the
human-preferred scale, and how often each automatic metric agrees with the votes.

- **Slots.** A vote compares two images of one slot: same provider, LoRA, prompt, seed,
  options and image index, at two scales; the no-LoRA baseline of that prompt and seed is the
  scale `""`. Unseeded cells have no same-seed partner and are left out. In an
  image-conditioned run a slot is also one denoising strength and one input picture: a scale
  is only comparable with another made from the same input at the same strength, and the
  baseline is that strength's and that input's.
- **Fit.** Bradley-Terry (evalica, Newman's iteration) per (LoRA, provider) — and per
  strength in a strength sweep, where a scale's strength depends on the denoising strength;
  votes from different inputs at one strength pool (the same question, more evidence) — over the scales
  that got votes; a tie counts half a win for each side. Plain BT has no finite answer when a
  scale never loses (common after a few votes), so a prior of `prior` virtual ties between
  each pair of *neighbouring* scales is added: it keeps every fit finite and connected and
  says, before any vote, that adjacent scales look alike. Strengths are log-strengths
  relative to the baseline (else the lowest voted scale); the 95 % interval is a bootstrap
  over votes (resampled counts become evalica's example weights), the prior held fixed.
- **Preferred scale.** The scale with the highest strength; `p_best` is the share of bootstrap
  fits in which it stays on top (how settled the answer is).
- **Agreement.** For each decided vote (left or right, not tie or skip), a metric agrees when
  it scores the chosen image higher. Share of agreeing votes among those the metric separates,
  with a Wilson 95 % interval. The baseline's style shift is 0 by definition (it is the
  reference the shift is measured from).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from lorascope.harness.ratings import Vote

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

BASELINE = ""
DEFAULT_PRIOR = 1.0
DEFAULT_RESAMPLES = 1000
#: Metrics checked against the votes, when the run has them (higher = "this metric prefers it").
AGREEMENT_METRICS = ("clip_score", "style_shift", "lora_effect", "agreement")
METRIC_LABELS = {"clip_score": "CLIPScore", "style_shift": "style shift", "lora_effect": "LoRA effect",
                 "agreement": "cross-provider agreement"}


def scale_label(scale: str) -> str:
    return "no LoRA" if scale == BASELINE else f"scale {scale}"


def scale_order(scale: str) -> tuple[int, float, str]:
    """Baseline first, then by numeric scale (a stack's '0.6+0.4' by its first member)."""
    if scale == BASELINE:
        return (0, 0.0, "")
    try:
        return (1, float(scale.split("+")[0]), scale)
    except ValueError:
        return (2, 0.0, scale)


# ---- slots: what can be compared ----------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    cell_id: str
    index: int
    sha256: str
    path: str
    scale: str
    generation_id: int | None


@dataclass
class Slot:
    key: str  # opaque and stable: a hash of the fields below
    provider: str
    lora: str
    prompt_id: str
    prompt: str
    seed: int
    options: str
    image_index: int
    images: dict[str, ImageRef] = field(default_factory=dict)  # scale -> image
    #: image-conditioned runs: the denoising strength and the input picture's id (suite
    #: `images:`) every image of the slot was made with; None for text-to-image
    strength: float | None = None
    input_id: str | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """Scale pairs worth a vote here (two different pictures), in scale order."""
        scales = sorted(self.images, key=scale_order)
        return [(a, b) for i, a in enumerate(scales) for b in scales[i + 1:]
                if self.images[a].sha256 != self.images[b].sha256]


def slot_digest(provider: str, lora: str, prompt_id: str, seed: int, options: str, image_index: int,
                strength: float | None = None, input_id: str | None = None) -> str:
    """A slot's stable key. Text-to-image keys hash exactly the six fields they always did
    (votes stored before image-conditioned runs existed keep matching); strength and input
    join the hash only when a run has them."""
    key: tuple = (provider, lora, prompt_id, seed, options, image_index)
    if strength is not None or input_id is not None:
        key = (*key, {"strength": strength, "input": input_id})
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:20]


def _conditioning(row: dict) -> tuple[float | None, str | None]:
    """A row's denoising strength and input id (None, None for text-to-image rows)."""
    strength, image = row.get("strength"), row.get("init_image")
    strength = None if strength is None or _missing(strength) else float(strength)
    image = None if image is None or _missing(image) or image == "" else str(image)
    return strength, image


def _missing(value) -> bool:
    return value is _NA() or (isinstance(value, float) and math.isnan(value))


def build_slots(frame: "pd.DataFrame") -> list[Slot]:
    """The run's comparable slots, from its results frame (one row per image). Rows of other
    strengths or input pictures never share a slot, nor a baseline."""
    from lorascope.evals.metrics import hashable, scale_key

    ok = frame[(frame["status"] == "succeeded") & (frame["image_sha256"].astype(str) != "")]
    baselines: dict[tuple, ImageRef] = {}
    slots: dict[tuple, Slot] = {}
    for row in ok.to_dict("records"):
        seed = hashable(row["seed"])
        if seed == "":
            continue
        gid = row.get("generation_id")
        gid = None if gid is None or _missing(gid) else int(gid)
        scale = scale_key(row)
        strength, input_id = _conditioning(row)
        ref = ImageRef(row["cell_id"], int(row["image_index"]), row["image_sha256"], row["image_path"], scale, gid)
        where = (row["provider"], row["prompt_id"], int(seed), str(row["options"]), int(row["image_index"]),
                 strength, input_id)
        if not row["lora"]:
            baselines[where] = ref
            continue
        key = (row["provider"], row["lora"], *where[1:])
        slot = slots.get(key)
        if slot is None:
            slot = slots[key] = Slot(slot_digest(*key), row["provider"], row["lora"], row["prompt_id"],
                                     row["prompt"], int(seed), str(row["options"]), int(row["image_index"]),
                                     strength=strength, input_id=input_id)
        slot.images[scale] = ref
    for key, slot in slots.items():
        base = baselines.get((key[0], *key[2:]))
        if base is not None:
            slot.images[BASELINE] = base
    return [s for s in slots.values() if s.pairs()]


def is_conditioned(slots: Iterable[Slot]) -> bool:
    """Whether the slots come from an image-conditioned run (a strength or an input each)."""
    return any(s.strength is not None or s.input_id is not None for s in slots)


def cell_slots(slots: Iterable[Slot]) -> dict[tuple[str, str, int], Slot]:
    """{(lora, cell_id, image_index): slot} for every image of every slot (a baseline image
    belongs to one slot per LoRA): how a stored vote finds its slot, strength and input."""
    return {(s.lora, ref.cell_id, ref.index): s for s in slots for ref in s.images.values()}


def vote_slot(v: Vote, by_cell: dict[tuple[str, str, int], Slot]) -> Slot | None:
    """The slot both of a vote's pictures belong to; None when they are not one slot's (this
    run has no such pictures, or an older vote paired two strengths or inputs)."""
    left = by_cell.get((v.lora, v.left_cell, v.left_index))
    right = by_cell.get((v.lora, v.right_cell, v.right_index))
    if left is None or right is None or left.key != right.key:
        return None
    return left


def _NA():  # pandas' NA without importing pandas at module load
    import pandas as pd

    return pd.NA


# ---- Bradley-Terry ---------------------------------------------------------------------


@dataclass
class ScaleStrength:
    scale: str
    strength: float  # log-strength relative to the reference scale
    low: float
    high: float
    wins: int
    losses: int
    ties: int
    p_best: float

    @property
    def votes(self) -> int:
        return self.wins + self.losses + self.ties


@dataclass
class GroupFit:
    provider: str
    lora: str
    reference: str
    strengths: list[ScaleStrength]
    decided: int
    ties: int
    skips: int
    raters: list[str]
    #: the denoising strength these votes were cast at (a strength sweep: one fit per
    #: strength, since a scale's effect depends on it); None for text-to-image
    strength: float | None = None

    @property
    def preferred(self) -> ScaleStrength | None:
        voted = [s for s in self.strengths if s.votes]
        return max(voted, key=lambda s: s.strength) if voted else None

    @property
    def preferred_scale(self) -> float | None:
        """The human-preferred LoRA scale; None when people preferred no LoRA, or no votes."""
        best = self.preferred
        if best is None or best.scale == BASELINE:
            return None
        try:
            return float(best.scale.split("+")[0])
        except ValueError:
            return None

    def as_dict(self) -> dict:
        best = self.preferred
        return {
            "provider": self.provider, "lora": self.lora, "strength": self.strength, "reference": self.reference,
            "decided": self.decided, "ties": self.ties, "skips": self.skips, "raters": self.raters,
            "preferred": None if best is None else best.scale,
            "preferred_scale": self.preferred_scale,
            "strengths": [vars(s) for s in self.strengths],
        }


def _outcomes(votes: Iterable[Vote]) -> list[tuple[str, str, str]]:
    """(left scale, right scale, choice) of the informative votes (skips dropped)."""
    return [(v.left_scale, v.right_scale, v.choice) for v in votes if v.choice != "skip"]


def bt_log_strengths(outcomes: Sequence[tuple[str, str, str]], items: Sequence[str], *, prior: float,
                     weights: Sequence[float] | None = None) -> dict[str, float]:
    """Bradley-Terry log-strengths of `items` (mean 0) from (left, right, choice) outcomes,
    ties as half wins, plus `prior` virtual ties between neighbours in `items` order."""
    import evalica

    xs = [o[0] for o in outcomes]
    ys = [o[1] for o in outcomes]
    code = {"left": evalica.Winner.X, "right": evalica.Winner.Y, "tie": evalica.Winner.Draw}
    winners = [code[o[2]] for o in outcomes]
    w = list(weights) if weights is not None else [1.0] * len(outcomes)
    if prior > 0:
        for a, b in zip(items, items[1:]):
            xs.append(a)
            ys.append(b)
            winners.append(evalica.Winner.Draw)
            w.append(float(prior))
    elif not _strongly_connected(outcomes, items):
        raise ValueError("without a prior, every scale must both beat (or tie) and lose to (or tie) the others: "
                         "the votes leave the strengths unbounded")
    import pandas as pd

    result = evalica.bradley_terry(xs, ys, winners, weights=w, index=pd.Index(list(items)),
                                   tolerance=1e-10, limit=10_000)
    logs = {item: math.log(float(result.scores[item])) for item in items}
    mean = sum(logs.values()) / len(logs)
    return {k: v - mean for k, v in logs.items()}


def _strongly_connected(outcomes: Sequence[tuple[str, str, str]], items: Sequence[str]) -> bool:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    pos = {s: i for i, s in enumerate(items)}
    rows, cols = [], []
    for a, b, choice in outcomes:
        if choice in ("left", "tie"):
            rows.append(pos[b]); cols.append(pos[a])  # b lost to (or tied) a: edge b -> a
        if choice in ("right", "tie"):
            rows.append(pos[a]); cols.append(pos[b])
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(items), len(items)))
    n, _ = connected_components(graph, directed=True, connection="strong")
    return n == 1


def fit_group(votes: Sequence[Vote], *, prior: float = DEFAULT_PRIOR, resamples: int = DEFAULT_RESAMPLES,
              seed: int = 0, scales: Iterable[str] = (), strength: float | None = None) -> GroupFit:
    """Fit one (LoRA, provider[, strength])'s votes. `scales` adds scales without votes
    (listed, no strength), so a table shows what has not been judged yet."""
    assert votes or scales, "nothing to fit"
    first = votes[0] if votes else None
    outcomes = _outcomes(votes)
    counts: dict[str, Counter] = defaultdict(Counter)
    for a, b, choice in outcomes:
        if choice == "tie":
            counts[a]["ties"] += 1
            counts[b]["ties"] += 1
        else:
            winner, loser = (a, b) if choice == "left" else (b, a)
            counts[winner]["wins"] += 1
            counts[loser]["losses"] += 1
    items = sorted({s for o in outcomes for s in o[:2]}, key=scale_order)
    reference = BASELINE if BASELINE in items else (items[0] if items else BASELINE)
    strengths: dict[str, tuple[float, float, float, float]] = {}
    if len(items) >= 2:
        point = bt_log_strengths(outcomes, items, prior=prior)
        rel = {k: v - point[reference] for k, v in point.items()}
        rng = np.random.default_rng(seed)
        boot = np.empty((resamples, len(items)))
        best_count = Counter()
        for r in range(resamples):
            w = rng.multinomial(len(outcomes), [1.0 / len(outcomes)] * len(outcomes)).astype(float)
            fit = bt_log_strengths(outcomes, items, prior=prior, weights=w)
            boot[r] = [fit[i] - fit[reference] for i in items]
            best_count[items[int(np.argmax(boot[r]))]] += 1
        for j, item in enumerate(items):
            low, high = (np.percentile(boot[:, j], [2.5, 97.5]) if resamples else (math.nan, math.nan))
            strengths[item] = (rel[item], float(low), float(high), best_count[item] / resamples if resamples else math.nan)
    all_scales = sorted(set(items) | set(scales), key=scale_order)
    rows = []
    for s in all_scales:
        est = strengths.get(s, (math.nan, math.nan, math.nan, math.nan))
        c = counts.get(s, Counter())
        rows.append(ScaleStrength(s, *est[:3], wins=c["wins"], losses=c["losses"], ties=c["ties"], p_best=est[3]))
    return GroupFit(
        provider=first.provider if first else "",
        lora=first.lora if first else "",
        reference=reference,
        strengths=rows,
        decided=sum(1 for o in outcomes if o[2] != "tie"),
        ties=sum(1 for o in outcomes if o[2] == "tie"),
        skips=sum(1 for v in votes if v.choice == "skip"),
        raters=sorted({v.rater for v in votes}),
        strength=strength,
    )


def fit_all(votes: Sequence[Vote], slots: Sequence[Slot] = (), **kw) -> list[GroupFit]:
    """One fit per (LoRA, provider) that has votes, in LoRA then provider order; in a
    strength sweep one per (LoRA, provider, strength), each vote at the strength of the slot
    its pictures belong to (`slots`: the run's, from `build_slots`). A vote whose pictures
    are not one slot's (an older vote that paired two strengths or inputs) answers no
    one-strength question and is left out."""
    by_cell = cell_slots(slots)
    conditioned = is_conditioned(slots)
    groups: dict[tuple[str, str, float | None], list[Vote]] = defaultdict(list)
    for v in votes:
        slot = vote_slot(v, by_cell) if conditioned else None
        if conditioned and slot is None:
            continue
        groups[(v.lora, v.provider, slot.strength if slot is not None else None)].append(v)
    scales: dict[tuple[str, str, float | None], set[str]] = defaultdict(set)
    for s in slots:
        scales[(s.lora, s.provider, s.strength)].update(s.images)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], -1.0 if k[2] is None else k[2])):
        out.append(fit_group(groups[key], scales=scales.get(key, ()), strength=key[2], **kw))
    return out


# ---- agreement of automatic metrics with the votes --------------------------------------


@dataclass
class Agreement:
    metric: str
    agree: int
    disagree: int
    undecided: int  # the metric scored both images the same, or one is missing
    share: float
    low: float
    high: float

    @property
    def label(self) -> str:
        return METRIC_LABELS.get(self.metric, self.metric)

    @property
    def n(self) -> int:
        return self.agree + self.disagree


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float, float]:
    """Share k/n with its Wilson score 95 % interval (NaN when n = 0)."""
    if n == 0:
        return math.nan, math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def agreement_metrics(scored: "pd.DataFrame") -> list[str]:
    """The built-in metrics, then every plugin scorer whose columns the frame carries
    (`<scorer>` beside `<scorer>_gain`, evals.scorer_store)."""
    plugins = [c for c in scored.columns if f"{c}_gain" in scored.columns and c not in AGREEMENT_METRICS]
    return [*AGREEMENT_METRICS, *plugins]


def metric_agreement(votes: Sequence[Vote], scored: "pd.DataFrame",
                     metrics: Sequence[str] | None = None) -> list[Agreement]:
    """Per metric the scored frame has values for: agreement with the decided votes."""
    import pandas as pd

    metrics = agreement_metrics(scored) if metrics is None else metrics
    out = []
    decided = [v for v in votes if v.decided]
    for metric in metrics:
        if metric not in scored.columns:
            continue
        values = pd.to_numeric(scored[metric], errors="coerce")
        if metric == "style_shift":
            values = values.where(scored["lora"] != "", 0.0)  # the baseline is the shift's zero
        if values.notna().sum() == 0:
            continue
        lookup = {(c, int(i), s): float(v) for c, i, s, v in
                  zip(scored["cell_id"], scored["image_index"], scored["image_sha256"], values)}
        agree = disagree = undecided = 0
        for v in decided:
            left = lookup.get((v.left_cell, v.left_index, v.left_sha256), math.nan)
            right = lookup.get((v.right_cell, v.right_index, v.right_sha256), math.nan)
            if math.isnan(left) or math.isnan(right) or left == right:
                undecided += 1
                continue
            metric_pick = "left" if left > right else "right"
            if metric_pick == v.choice:
                agree += 1
            else:
                disagree += 1
        share, low, high = wilson(agree, agree + disagree)
        out.append(Agreement(metric, agree, disagree, undecided, share, low, high))
    return out


# ---- choosing the next pair ------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    slot: Slot
    left: ImageRef
    right: ImageRef

    @property
    def key(self) -> str:
        return pair_key(self.slot.key, self.left.sha256, self.right.sha256)


def pair_key(slot_key: str, sha_a: str, sha_b: str) -> str:
    a, b = sorted((sha_a, sha_b))
    return f"{slot_key}:{a}:{b}"


class PairChooser:
    """Picks the pair where one more vote teaches most: for the rater, the (LoRA, provider)
    they judged least; in it, the scale pair with the closest estimated strengths and fewest
    votes; then the prompt/seed slot with the fewest votes on that pair that this rater has
    not judged yet. Left and right are shuffled."""

    def __init__(self, slots: Sequence[Slot], *, target_per_lora: int = 30, prior: float = DEFAULT_PRIOR,
                 rng: random.Random | None = None) -> None:
        self.slots = list(slots)
        self.target = target_per_lora
        self.prior = prior
        self.rng = rng or random.Random()
        self.groups: dict[tuple[str, str], list[Slot]] = defaultdict(list)
        for s in self.slots:
            self.groups[(s.lora, s.provider)].append(s)
        self.by_key = {s.key: s for s in self.slots}
        self._by_cell = cell_slots(self.slots)
        # text-to-image slots are also found by their fields (as before cells were used)
        self._by_fields = {(s.provider, s.lora, s.prompt_id, s.seed, s.options, s.image_index): s.key
                           for s in self.slots if s.strength is None and s.input_id is None}

    def possible(self, group: tuple[str, str]) -> int:
        return sum(len(s.pairs()) for s in self.groups[group])

    def progress(self, votes: Sequence[Vote], rater: str) -> list[dict]:
        mine = Counter((v.lora, v.provider) for v in votes if v.rater == rater)
        return [
            {"lora": lora, "provider": provider, "votes": mine[(lora, provider)],
             "target": min(self.target, self.possible((lora, provider))),
             "possible": self.possible((lora, provider))}
            for lora, provider in sorted(self.groups)
        ]

    def choose(self, votes: Sequence[Vote], rater: str, exclude: Iterable[str] = ()) -> Pair | None:
        excluded = set(exclude)
        done = {pair_key(self.slot_key(v), v.left_sha256, v.right_sha256) for v in votes if v.rater == rater}
        mine = Counter((v.lora, v.provider) for v in votes if v.rater == rater)
        order = sorted(self.groups, key=lambda g: (mine[g], self.rng.random()))
        for group in order:
            pair = self._choose_in(group, [v for v in votes if (v.lora, v.provider) == group], done | excluded)
            if pair is not None:
                return pair
        return None

    def slot_key(self, v: Vote) -> str:
        """The slot a vote was about, found by its pictures' cells ('' when this run has no
        such slot): the fields alone do not tell two strengths or inputs apart."""
        slot = vote_slot(v, self._by_cell)
        if slot is not None:
            return slot.key
        return self._by_fields.get((v.provider, v.lora, v.prompt_id, v.seed, v.options, v.left_index), "")

    def _choose_in(self, group: tuple[str, str], votes: list[Vote], taken: set[str]) -> Pair | None:
        # strengths and per-pair counts per denoising strength (one None for text-to-image):
        # a scale's estimated strength at 0.3 says nothing about the same scale at 0.8
        by_strength: dict[float | None, list[Vote]] = defaultdict(list)
        for v in votes:
            slot = vote_slot(v, self._by_cell)
            by_strength[slot.strength if slot is not None else None].append(v)
        estimates: dict[float | None, dict[str, float]] = {}
        per_pair: Counter = Counter()
        for at, these in by_strength.items():
            outcomes = _outcomes(these)
            items = sorted({x for o in outcomes for x in o[:2]}, key=scale_order)
            estimates[at] = bt_log_strengths(outcomes, items, prior=self.prior) if len(items) >= 2 else {}
            per_pair.update((at, *sorted((v.left_scale, v.right_scale), key=scale_order)) for v in these)
        per_slot_pair = Counter(pair_key(self.slot_key(v), v.left_sha256, v.right_sha256) for v in votes)
        candidates = []
        for slot in self.groups[group]:
            strengths = estimates.get(slot.strength, {})
            for a, b in slot.pairs():
                key = pair_key(slot.key, slot.images[a].sha256, slot.images[b].sha256)
                if key in taken:
                    continue
                gap = abs(strengths[a] - strengths[b]) if a in strengths and b in strengths else 0.0
                candidates.append((gap + math.log1p(per_pair[(slot.strength, a, b)]), per_slot_pair[key],
                                   self.rng.random(), slot, a, b))
        if not candidates:
            return None
        _, _, _, slot, a, b = min(candidates, key=lambda c: c[:3])
        left, right = slot.images[a], slot.images[b]
        if self.rng.random() < 0.5:
            left, right = right, left
        return Pair(slot, left, right)


# ---- a recommendation from the votes (`recommend --objective human`) -------------------


def human_recommendations(fits: Sequence[GroupFit], entries: dict, *,
                          pair_strengths: dict[tuple[str, str], float | None] | None = None) -> list:
    """One `evals.recommend.Recommendation` per fitted (LoRA, provider): the human-preferred
    scale, clamped into the catalogue range with a warning (as the automatic rule does);
    none when people preferred no LoRA. Points carry each scale's strength and interval.

    In a strength sweep the votes compare scales at one strength, so they cannot choose the
    strength: it is the pair rule's (`pair_strengths`, {(lora, provider): strength} from
    evals.recommend_pairs on the scored run) when it has votes, else the lowest strength with
    votes; the scale is the one people preferred there, and the reason says which and why."""
    from lorascope.evals.recommend import Recommendation, ScalePoint, clamp_to_catalogue

    pair_strengths = pair_strengths or {}
    per_group: dict[tuple[str, str], list[GroupFit]] = defaultdict(list)
    for fit in fits:
        per_group[(fit.lora, fit.provider)].append(fit)
    out = []
    for (lora, provider), group in per_group.items():
        fit, why_strength = _fit_at_strength(group, pair_strengths.get((lora, provider)))
        entry = entries.get(fit.lora)
        rec = Recommendation(
            lora=fit.lora, provider=fit.provider, basis="human", scale=None,
            catalogue_scale=entry.scale.recommended if entry else None,
            catalogue_range=tuple(entry.scale.range) if entry else None,
            baseline_clip_score=math.nan, strength=fit.strength,
        )
        for s in fit.strengths:
            if s.scale == BASELINE or not s.votes:
                continue
            try:
                value = float(s.scale.split("+")[0])
            except ValueError:
                continue
            rec.points.append(ScalePoint(value, s.votes, s.strength, s.low, s.high,
                                         math.nan, math.nan, math.nan, True))
        best = fit.preferred
        if best is None:
            rec.reason = "no decided votes yet"
        elif fit.preferred_scale is None:
            rec.reason = (f"people preferred no LoRA (P(best) {best.p_best:.0%} over "
                          f"{fit.decided} decided vote(s))")
        else:
            rec.scale = rec.measured_scale = fit.preferred_scale
            rec.reason = (f"highest Bradley-Terry strength from {fit.decided} decided vote(s), {fit.ties} tie(s): "
                          f"{best.strength:+.2f} vs {scale_label(fit.reference)}, P(best) {best.p_best:.0%}")
            clamp_to_catalogue(rec, entry, what="preferred")
        if why_strength:
            rec.reason = f"{why_strength}; {rec.reason}"
        out.append(rec)
    return out


def _fit_at_strength(group: list[GroupFit], pair_strength: float | None) -> tuple[GroupFit, str]:
    """The fit a (LoRA, provider)'s recommendation is read from, and in a strength sweep the
    sentence saying which strength and why ('' for text-to-image)."""
    swept = [f for f in group if f.strength is not None]
    if not swept:
        return group[0], ""
    voted = sorted((f for f in swept if f.decided + f.ties), key=lambda f: f.strength) or sorted(
        swept, key=lambda f: f.strength)
    cannot = "votes compare scales at one strength, so they do not choose it"
    chosen = next((f for f in voted if pair_strength is not None and f.strength == pair_strength), None)
    if chosen is not None:
        return chosen, f"at strength {chosen.strength:g}, the pair rule's choice on the scores ({cannot})"
    chosen = voted[0]
    if pair_strength is None:
        why = "the pair rule chose no strength"
    else:
        why = f"the pair rule's strength {pair_strength:g} has no votes"
    return chosen, f"at strength {chosen.strength:g}, the lowest strength with votes ({why}; {cannot})"


def pair_rule_strengths(run_dir, entries: dict) -> dict[tuple[str, str], float | None]:
    """{(lora, provider): strength} the pair rule (evals.recommend_pairs) chooses on the run's
    latest scores; empty when the run is not scored or has no strength axis."""
    from lorascope.evals.fidelity import fidelity_columns
    from lorascope.evals.recommend_pairs import recommend_pairs
    from lorascope.evals.results import run_model, scored_frame

    model = run_model(run_dir)
    if model is None:
        return {}
    scored = fidelity_columns(scored_frame(run_dir, model), run_dir)
    return {(p.lora, p.provider): p.strength for p in recommend_pairs(scored, entries)}


def human_recommendations_for_run(run_dir, entries: dict, *, rater: str | None = None,
                                  resamples: int = DEFAULT_RESAMPLES) -> list:
    """`human_recommendations` from a run folder's stored votes ([] when it has none); in a
    strength sweep, fitted per strength and read at the pair rule's strength."""
    from lorascope.harness.ratings import Ratings
    from lorascope.harness.store import RunStore

    with Ratings.open(run_dir) as ratings:
        votes = ratings.votes(rater)
    if not votes:
        return []
    with RunStore.open(run_dir) as store:
        slots = build_slots(store.results_frame())
    if not is_conditioned(slots):
        slots = []  # text-to-image: the votes alone, as always
    fits = fit_all(votes, slots, resamples=resamples)
    swept = any(f.strength is not None for f in fits)
    return human_recommendations(fits, entries, pair_strengths=pair_rule_strengths(run_dir, entries) if swept else None)
