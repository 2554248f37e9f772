"""`recommend --objective EXPR [--constraint EXPR ...]`: the user's choice of what a good scale is.

Grammar (a small, safe subset of Python expressions, parsed with `ast`, never `eval`):

- names: any numeric per-image column of the scored run — `clip_score`, `style_shift`,
  `lora_effect`, `agreement`, and each stored scorer's `<scorer>` and `<scorer>_gain`
  (`aesthetic_gain`, `hpsv2_gain`, `pickscore_gain`). A name stands for the column's mean
  over the prompts and seeds at one (LoRA, scale, provider). `base_<name>` is the mean of the
  provider's no-LoRA images; `scale` is the scale itself.
- numbers, `+ - * /`, unary `-`, `abs()`, `min()`, `max()`; in constraints also comparisons
  (`<`, `<=`, `>`, `>=`, chained) and `and` / `or` / `not`.

The rule with an objective: among scales > 0 that meet every constraint and have a finite
objective, take the largest objective value `best`; the recommendation is the smallest
scale reaching `target` x best (default 90 %: most of the gain, least risk). No recommendation
when no scale qualifies or best <= 0 (nothing improves). Without --objective, the default
rule (evals.recommend.RULE) applies unchanged. Examples:

    --objective aesthetic_gain --constraint "clip_score >= base_clip_score - 0.02"
    --objective "pickscore_gain + 10 * style_shift"
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pandas as pd

from lorascope.evals.metrics import is_scorable, iter_loras
from lorascope.evals.recommend import Recommendation, ScalePoint, clamp_to_catalogue, strengths_of
from lorascope.evals.stats import mean_ci

if TYPE_CHECKING:  # pragma: no cover
    from lorascope.registry.models import LoraEntry

_BIN: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}
_CMP: dict[type, Callable[[float, float], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_FUNCS: dict[str, Callable[..., float]] = {"abs": abs, "min": min, "max": max}
#: per-image columns that are identifiers or settings, not measurements
_NOT_METRICS = {"scale", "strength", "image_index", "seed", "width", "height", "n_loras", "steps", "guidance_scale"}


class ObjectiveError(ValueError):
    """A bad --objective/--constraint; the message lists every problem."""


@dataclass(frozen=True)
class Expr:
    text: str
    tree: ast.expr
    boolean: bool

    def names(self) -> set[str]:
        return {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and n.id not in _FUNCS}


def _check(node: ast.AST, boolean: bool, where: str, problems: list[str]) -> None:
    if isinstance(node, ast.BoolOp) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)) \
            or isinstance(node, ast.Compare):
        if not boolean:
            problems.append(f"{where}: comparisons and and/or/not belong in --constraint, not the objective")
        if isinstance(node, ast.Compare) and not all(type(op) in _CMP for op in node.ops):
            problems.append(f"{where}: only < <= > >= compare")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BIN:
            problems.append(f"{where}: operator {type(node.op).__name__} not allowed (use + - * /)")
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            problems.append(f"{where}: unary {type(node.op).__name__} not allowed")
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords:
            problems.append(f"{where}: only abs(), min(), max() may be called")
        for arg in node.args:
            _check(arg, False, where, problems)
        return
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float)) or isinstance(node.value, bool):
            problems.append(f"{where}: constant {node.value!r} is not a number")
    elif not isinstance(node, ast.Name):
        problems.append(f"{where}: {type(node).__name__} not allowed")
        return
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.expr):
            _check(child, boolean and not isinstance(node, (ast.BinOp, ast.Compare)), where, problems)


def parse(text: str, *, boolean: bool, where: str, problems: list[str]) -> Expr | None:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        problems.append(f"{where} {text!r}: not an expression ({exc.msg})")
        return None
    before = len(problems)
    _check(tree, boolean, f"{where} {text!r}", problems)
    return Expr(text.strip(), tree, boolean) if len(problems) == before else None


def evaluate(node: ast.expr, env: Mapping[str, float]) -> Any:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BinOp):
        left, right = evaluate(node.left, env), evaluate(node.right, env)
        if isinstance(node.op, ast.Div) and right == 0:
            return math.nan
        return _BIN[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return not evaluate(node.operand, env)
        value = evaluate(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call):
        return _FUNCS[node.func.id](*(evaluate(a, env) for a in node.args))  # type: ignore[union-attr]
    if isinstance(node, ast.BoolOp):
        values = [evaluate(v, env) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = evaluate(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            right = evaluate(comp, env)
            if not _CMP[type(op)](left, right):  # NaN compares False: an unmeasured scale fails
                return False
            left = right
        return True
    raise ObjectiveError(f"cannot evaluate {ast.dump(node)}")


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric per-image measurements an expression may name."""
    return sorted(c for c in frame.columns
                  if c not in _NOT_METRICS and pd.api.types.is_float_dtype(frame[c]) and not c.startswith("base_"))


@dataclass
class Objective:
    objective: Expr
    constraints: list[Expr] = field(default_factory=list)

    def describe(self) -> str:
        text = f"maximise {self.objective.text}"
        if self.constraints:
            text += " subject to " + " and ".join(c.text for c in self.constraints)
        return text


def parse_objective(objective: str, constraints: Sequence[str], frame: pd.DataFrame) -> Objective:
    """Parse and check against the run's columns; every problem in one ObjectiveError."""
    problems: list[str] = []
    obj = parse(objective, boolean=False, where="--objective", problems=problems)
    cons = [parse(c, boolean=True, where="--constraint", problems=problems) for c in constraints]
    known = set(metric_columns(frame))
    allowed = known | {f"base_{m}" for m in known} | {"scale"}
    if len(strengths_of(frame)) > 1:  # a strength sweep: cells are (scale, strength)
        allowed |= {"strength"}
    for expr, where in [(obj, "--objective"), *((c, "--constraint") for c in cons)]:
        if expr is None:
            continue
        unknown = sorted(expr.names() - allowed)
        if unknown:
            problems.append(f"{where} {expr.text!r}: unknown name(s) {', '.join(unknown)}; "
                            f"this run has {', '.join(sorted(known))} (and base_<name>, scale)")
    if problems:
        raise ObjectiveError("\n".join(problems))
    return Objective(obj, [c for c in cons if c is not None])  # type: ignore[arg-type]


def recommend_by_objective(
    scored: pd.DataFrame,
    entries: Mapping[str, "LoraEntry"],
    objective: Objective,
    *,
    target_fraction: float = 0.9,
) -> list[Recommendation]:
    """The objective rule (module docstring) per LoRA and provider; `basis` names the objective.
    A run sweeping denoising strengths is decided over (scale, strength) cells, each against its
    own strength's no-LoRA baseline, never pooled: the lowest strength, then smallest scale,
    reaching `target` x best."""
    ok = scored[is_scorable(scored)]
    metrics = metric_columns(scored)
    strengths = strengths_of(scored)
    levels: list[tuple[float | None, pd.DataFrame]] = (
        [(value, ok[pd.to_numeric(ok["strength"], errors="coerce") == value]) for value in strengths]
        if len(strengths) > 1 else [(None, ok)])
    out: list[Recommendation] = []
    for provider in sorted(ok["provider"].unique()):
        for lora in iter_loras(ok[ok["provider"] == provider]):
            entry = entries.get(lora)
            decided = []
            for strength, rows in levels:
                prov = rows[rows["provider"] == provider]
                baseline = prov[prov["lora"] == ""]
                base = {f"base_{m}": mean_ci(pd.to_numeric(baseline[m], errors="coerce")).mean for m in metrics}
                rec = Recommendation(
                    lora=lora, provider=provider, basis=objective.describe(), scale=None,
                    catalogue_scale=entry.scale.recommended if entry else None,
                    catalogue_range=tuple(entry.scale.range) if entry else None,  # type: ignore[arg-type]
                    baseline_clip_score=base.get("base_clip_score", math.nan), strength=strength,
                )
                rec.points = _points(prov[prov["lora"] == lora], base, metrics, objective, strength)
                decided.append(rec)
            out.append(_decide_over(decided, entry, target_fraction))
    return out


def _points(rows: pd.DataFrame, base: dict[str, float], metrics: list[str], objective: Objective,
            strength: float | None) -> list[ScalePoint]:
    """One point per scale: the objective's value and whether the constraints hold there."""
    single = objective.objective.text if objective.objective.text in metrics else None
    points = []
    for scale, group in sorted(rows.groupby("scale"), key=lambda kv: kv[0]):
        env = {m: mean_ci(pd.to_numeric(group[m], errors="coerce")).mean for m in metrics}
        env.update(base)
        env["scale"] = float(scale)
        if strength is not None:
            env["strength"] = strength
        value = float(evaluate(objective.objective.tree, env))
        meets = all(bool(evaluate(c.tree, env)) for c in objective.constraints)
        ci = mean_ci(pd.to_numeric(group[single], errors="coerce")) if single else None
        clip = mean_ci(pd.to_numeric(group["clip_score"], errors="coerce")) if "clip_score" in group else None
        points.append(ScalePoint(
            float(scale), len(group), value,
            ci.low if ci else math.nan, ci.high if ci else math.nan,
            clip.mean if clip else math.nan, clip.low if clip else math.nan, clip.high if clip else math.nan,
            meets,
        ))
    return points


def _decide_over(decided: list[Recommendation], entry: "LoraEntry | None", target_fraction: float) -> Recommendation:
    """One strength: the scale rule. Several: the rule over every (strength, scale) point, and
    the recommendation carries the chosen strength's points (the lowest strength's if none)."""
    if len(decided) == 1:
        _decide(decided[0], entry, target_fraction)
        return decided[0]
    pooled = Recommendation(**{**vars(decided[0]), "points": [p for r in decided for p in r.points], "warnings": []})
    owner = {id(p): r for r in decided for p in r.points}
    chosen = _decide(pooled, entry, target_fraction, order=lambda p: (owner[id(p)].strength, p.scale))
    rec = owner[id(chosen)] if chosen is not None else decided[0]
    rec.scale, rec.measured_scale, rec.warnings = pooled.scale, pooled.measured_scale, pooled.warnings
    rec.reason = (f"at strength {rec.strength:g}: {pooled.reason}" if chosen is not None
                  else f"{pooled.reason} at any strength; the figures are strength {rec.strength:g}'s")
    return rec


def _decide(rec: Recommendation, entry: "LoraEntry | None", target_fraction: float,
            order: Callable[[ScalePoint], Any] = lambda p: p.scale) -> ScalePoint | None:
    """Smallest point (by `order`: scale, or strength then scale) reaching target x best; the
    point chosen, or None (the reason says why)."""
    candidates = [p for p in rec.points if p.scale > 0 and not math.isnan(p.strength)]
    if not candidates:
        rec.reason = "no scale > 0 where the objective could be computed"
        return None
    meeting = [p for p in candidates if p.faithful]
    if not meeting:
        rec.reason = "no scale > 0 meets the constraints"
        return None
    best = max(p.strength for p in meeting)
    if best <= 0:
        rec.reason = f"no scale meeting the constraints improves the objective (best {best:+.4g})"
        return None
    chosen = min((p for p in meeting if p.strength >= target_fraction * best), key=order)
    rec.measured_scale = rec.scale = chosen.scale
    rec.reason = f"objective {chosen.strength:+.4g} >= {target_fraction:.0%} of best {best:+.4g}"
    clamp_to_catalogue(rec, entry)
    return chosen


#: `recommend --objective human`: the scale people preferred in `lorascope review` decides
#: (evals.ratings), not an expression over the stored metrics.
HUMAN = "human"


def run_objective(run_dir, frame: pd.DataFrame) -> tuple[Objective | str | None, str]:
    """The objective the user last chose for this run (`recommend.json`, written by
    `lorascope recommend --objective`), checked against the run's current columns; `HUMAN`
    when the votes chose; None with a note when there is none or it no longer applies (then
    the default rule is used)."""
    import json
    from pathlib import Path

    path = Path(run_dir) / "recommend.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, ""
    expr = saved.get("objective_expr") if isinstance(saved, dict) else None
    if not isinstance(expr, str) or not expr.strip():
        return None, ""
    if expr.strip() == HUMAN:
        return HUMAN, ""
    constraints = [c for c in saved.get("constraints") or [] if isinstance(c, str)]
    try:
        return parse_objective(expr, constraints, frame), ""
    except ObjectiveError as exc:
        return None, f"{path}: objective {expr!r} no longer applies ({str(exc).splitlines()[0]}); default rule used"
