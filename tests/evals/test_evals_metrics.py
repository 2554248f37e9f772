"""Per-image metrics, provider stats and aggregates on hand-built frames and vectors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lorascope.evals.metrics import agreement_matrix, aggregate, image_metrics, provider_stats, scale_key


def unit(*v):
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def row(provider="p", lora="", scale=float("nan"), prompt_id="a", seed=1, sha="", options="{}", **kw):
    base = {
        "cell_id": f"{provider}-{lora}-{scale}-{prompt_id}-{seed}-{options}",
        "provider": provider, "lora": lora, "scale": scale,
        "scales": "" if not lora else f"{scale:g}", "prompt_id": prompt_id, "prompt": f"prompt {prompt_id}",
        "seed": seed, "status": "succeeded", "error": "", "image_index": 0,
        "image_path": f"images/{sha}.png" if sha else "", "image_sha256": sha,
        "width": 1024, "height": 1024, "latency_s": 1.0, "cost_usd": 0.01, "options": options,
    }
    base.update(kw)
    return base


def test_clip_style_shift_lora_effect_against_the_matching_baseline():
    frame = pd.DataFrame([
        row(sha="b1"),
        row(lora="ink", scale=0.8, sha="l1"),
        row(sha="b2", options='{"acceleration": "high"}'),
        row(lora="ink", scale=0.8, sha="l2", options='{"acceleration": "high"}'),
    ])
    images = {"b1": unit(1, 0, 0), "l1": unit(1, 1, 0), "b2": unit(0, 0, 1), "l2": unit(0, 1, 1)}
    style = unit(0, 1, 0)
    texts = {"prompt a": unit(1, 0, 0), "ink style": style}
    out = image_metrics(frame, images, texts, {"ink": "ink style"})
    s = math.sqrt(0.5)
    assert out.at[0, "clip_cosine"] == pytest.approx(1.0)
    assert out.at[0, "clip_score"] == pytest.approx(2.5)
    assert out.at[1, "clip_score"] == pytest.approx(2.5 * s)
    # against its own baseline (same options): style cos s - 0
    assert out.at[1, "style_shift"] == pytest.approx(s - 0.0, abs=1e-6)
    assert out.at[1, "lora_effect"] == pytest.approx(1 - s, abs=1e-6)
    # the accelerated LoRA image is compared with the accelerated baseline, not the other one
    assert out.at[3, "lora_effect"] == pytest.approx(1 - s, abs=1e-6)
    assert out.at[3, "style_shift"] == pytest.approx(s, abs=1e-6)
    # a negative cosine scores 0
    assert out.at[2, "clip_score"] == 0.0 and out.at[2, "clip_cosine"] == pytest.approx(0.0)
    assert out.at[0, "lora_effect"] == 0.0 and math.isnan(out.at[0, "style_shift"])


def test_missing_baseline_failed_rows_and_missing_style_prompt_give_nan():
    frame = pd.DataFrame([
        row(lora="ink", scale=1.0, sha="l1"),
        row(lora="ink", scale=1.0, seed=2, status="failed", error="boom"),
        row(lora="plain", scale=1.0, sha="l3", prompt_id="a", seed=3),
        row(sha="b3", seed=3),
    ])
    images = {"l1": unit(1, 0), "l3": unit(0, 1), "b3": unit(1, 1)}
    out = image_metrics(frame, images, {"prompt a": unit(1, 0), "ink style": unit(0, 1)}, {"ink": "ink style", "plain": None})
    assert math.isnan(out.at[0, "style_shift"]) and math.isnan(out.at[0, "lora_effect"])  # no baseline
    assert out.iloc[1].isna().all()  # failed: nothing
    assert math.isnan(out.at[2, "style_shift"]) and out.at[2, "lora_effect"] > 0  # no style prompt


def test_agreement_is_the_cosine_to_the_other_providers_for_the_same_cell():
    frame = pd.DataFrame([
        row(provider="fal", lora="ink", scale=1.0, sha="f"),
        row(provider="novita", lora="ink", scale=1.0, sha="n"),
        row(provider="local", lora="ink", scale=1.0, sha="l"),
        row(provider="fal", lora="ink", scale=0.5, sha="f2"),
    ])
    images = {"f": unit(1, 0), "n": unit(1, 1), "l": unit(0, 1), "f2": unit(1, 0)}
    out = image_metrics(frame, images, {}, {})
    s = math.sqrt(0.5)
    assert out.at[0, "agreement"] == pytest.approx((s + 0.0) / 2, abs=1e-6)
    assert out.at[1, "agreement"] == pytest.approx(s, abs=1e-6)
    assert math.isnan(out.at[3, "agreement"])  # no other provider for that cell
    matrix = agreement_matrix(frame, images)
    assert matrix.at["fal", "novita"] == pytest.approx(s, abs=1e-6)
    assert matrix.at["fal", "fal"] == pytest.approx(1.0)


def test_provider_stats_latency_cost_and_failures():
    frame = pd.DataFrame([
        row(provider="fal", sha="a", latency_s=1.0, cost_usd=0.0085, width=1024, height=1024),
        row(provider="fal", sha="b", seed=2, latency_s=2.0, cost_usd=0.0085, width=1024, height=1024),
        row(provider="fal", sha="c", seed=3, latency_s=10.0, cost_usd=None, width=1024, height=1024),
        row(provider="fal", seed=4, status="failed", error="timeout", latency_s=30.0),
        row(provider="local", sha="d", latency_s=0.5, cost_usd=0.0, width=512, height=512),
    ])
    stats = provider_stats(frame)
    fal = stats.loc["fal"]
    assert fal["images"] == 3 and fal["failed"] == 1 and fal["failure_rate"] == pytest.approx(0.25)
    assert fal["latency_min"] == 1.0 and fal["latency_median"] == 2.0
    assert fal["latency_p95"] == pytest.approx(np.percentile([1.0, 2.0, 10.0], 95))
    assert fal["cost_known"] == 2 and fal["cost_per_image"] == pytest.approx(0.0085)
    assert fal["cost_per_mp"] == pytest.approx(0.0085 / 1.048576)
    assert stats.loc["local", "failure_rate"] == 0.0


def test_aggregate_groups_by_lora_scale_provider_with_t_intervals():
    rows, shifts = [], [0.01, 0.03, 0.02, 0.04]
    for i, shift in enumerate(shifts):
        rows.append(row(lora="ink", scale=0.8, seed=i, sha=f"x{i}", clip_score=0.8, style_shift=shift,
                        clip_cosine=0.32, lora_effect=0.1, agreement=float("nan")))
    rows.append(row(sha="b", clip_score=0.85, clip_cosine=0.34, lora_effect=0.0,
                    style_shift=float("nan"), agreement=float("nan")))
    agg = aggregate(pd.DataFrame(rows))
    ink = agg[agg["lora"] == "ink"].iloc[0]
    assert ink["scale"] == 0.8 and ink["scale_key"] == "0.8" and ink["images"] == 4
    half = 3.1824 * np.std(shifts, ddof=1) / 2
    assert ink["style_shift_mean"] == pytest.approx(0.025)
    assert ink["style_shift_high"] - ink["style_shift_mean"] == pytest.approx(half, abs=1e-4)
    assert ink["agreement_n"] == 0
    base = agg[agg["lora"] == ""].iloc[0]
    assert base["clip_score_n"] == 1 and math.isnan(base["clip_score_low"])


def test_scale_key_for_single_stack_and_baseline():
    assert scale_key({"lora": "", "scale": float("nan"), "scales": ""}) == ""
    assert scale_key({"lora": "ink", "scale": 1.0, "scales": "1"}) == "1"
    assert scale_key({"lora": "a+b", "scale": 0.8, "scales": "0.8+0.50"}) == "0.8+0.5"


def test_a_stack_is_scored_against_its_members_style_prompts():
    from lorascope.evals.metrics import style_prompt_for, texts_needed

    prompts = {"ink": "an ink drawing", "neon": "neon lights", "plain": None}
    assert style_prompt_for("ink+neon", prompts) == "an ink drawing, neon lights"
    assert style_prompt_for("plain+neon", prompts) == "neon lights"
    assert style_prompt_for("plain", prompts) is None and style_prompt_for("", prompts) is None
    frame = pd.DataFrame([row(lora="ink+neon", scale=0.8, scales="0.8+0.5", sha="s")])
    assert texts_needed(frame, prompts) == ["prompt a", "an ink drawing, neon lights"]


@pytest.mark.parametrize("module, heavy", [
    ("lorascope.cli", ("torch", "open_clip", "diffusers")),  # `lorascope --help` stays fast
    ("lorascope.evals.pytest_plugin", ("torch", "open_clip", "diffusers", "pandas")),  # loaded by every pytest run
])
def test_start_up_imports_stay_light(module, heavy):
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_clip_score_uses_the_prompt_without_trigger_words():
    """The store keeps both: `prompt` (the suite's text) and `final_prompt` (with the LoRA's
    trigger words, what the provider was sent). CLIP is asked about the former: a trigger is
    a nonsense token to CLIP, and scoring against it would reward the trigger, not the picture."""
    from lorascope.evals.metrics import texts_needed

    frame = pd.DataFrame([
        row(sha="b1", final_prompt="prompt a"),
        row(lora="ink", scale=1.0, sha="l1", final_prompt="t1nyink, prompt a"),
    ])
    images = {"b1": unit(1, 0, 0), "l1": unit(0, 1, 0)}
    texts = {"prompt a": unit(1, 0, 0), "t1nyink, prompt a": unit(0, 1, 0), "ink style": unit(0, 0, 1)}
    out = image_metrics(frame, images, texts, {"ink": "ink style"})
    # against "t1nyink, prompt a" the LoRA image would score 2.5; against the prompt it scores 0
    assert out.at[1, "clip_cosine"] == pytest.approx(0.0, abs=1e-6) and out.at[1, "clip_score"] == 0.0
    assert out.at[0, "clip_score"] == pytest.approx(2.5)
    assert "t1nyink, prompt a" not in texts_needed(frame, {"ink": "ink style"})


def test_style_shift_and_lora_effect_never_borrow_another_provider_or_seed_baseline():
    """Baselines of another provider, another seed and another prompt sit in the same frame;
    each LoRA image is measured against the one of its own provider, prompt and seed."""
    frame = pd.DataFrame([
        row(provider="fal", seed=1, sha="fal-b1"),
        row(provider="novita", seed=1, sha="nov-b1"),
        row(provider="fal", seed=2, sha="fal-b2"),
        row(provider="fal", seed=1, prompt_id="b", sha="fal-b1-other-prompt"),
        row(provider="novita", lora="ink", scale=1.0, seed=1, sha="nov-l1"),
        row(provider="fal", lora="ink", scale=1.0, seed=2, sha="fal-l2"),
    ])
    style = unit(0, 0, 1)
    images = {
        "fal-b1": unit(1, 0, 1), "nov-b1": unit(0, 1, 0), "fal-b2": unit(1, 1, 0),
        "fal-b1-other-prompt": unit(0, 0, 1),
        "nov-l1": unit(0, 1, 1), "fal-l2": unit(0, 1, 0),
    }
    out = image_metrics(frame, images, {"ink style": style}, {"ink": "ink style"})
    s = math.sqrt(0.5)
    # novita's LoRA image against novita's baseline (0,1,0): cos s, style cos s - 0
    # (fal's seed-1 baseline would give effect 0.5 and shift 0)
    assert out.at[4, "lora_effect"] == pytest.approx(1 - s, abs=1e-6)
    assert out.at[4, "style_shift"] == pytest.approx(s, abs=1e-6)
    # fal seed 2 against fal seed 2's baseline (1,1,0): cos s, style cos 0 - 0
    # (seed 1's would give effect 1 and shift -s; prompt b's effect 1 and shift -1)
    assert out.at[5, "lora_effect"] == pytest.approx(1 - s, abs=1e-6)
    assert out.at[5, "style_shift"] == pytest.approx(0.0, abs=1e-6)


def test_an_unseeded_image_has_no_same_seed_baseline_nor_cross_provider_cell():
    """Suite seed `null`: each request draws its own random seed, so the unseeded baseline is
    another picture, not this one without the LoRA; the seed's effect must not be reported
    as the LoRA's. CLIPScore and style cosine need no baseline and are kept."""
    none = float("nan")
    frame = pd.DataFrame([
        row(provider="fal", seed=none, sha="fal-base"),
        row(provider="fal", lora="ink", scale=1.0, seed=none, sha="fal-ink"),
        row(provider="novita", lora="ink", scale=1.0, seed=none, sha="nov-ink"),
    ])
    images = {"fal-base": unit(1, 0), "fal-ink": unit(0, 1), "nov-ink": unit(1, 1)}
    out = image_metrics(frame, images, {"prompt a": unit(1, 0), "ink style": unit(0, 1)}, {"ink": "ink style"})
    assert out.at[1, "clip_score"] == pytest.approx(0.0) and out.at[1, "style_cosine"] == pytest.approx(1.0)
    for idx in (1, 2):
        assert math.isnan(out.at[idx, "lora_effect"]) and math.isnan(out.at[idx, "style_shift"])
        assert math.isnan(out.at[idx, "agreement"])
    assert agreement_matrix(frame, images).isna().all().all()


def test_aggregate_keeps_denoising_strengths_apart():
    """An img2img run sweeping strengths: one group per (lora, scale, provider, strength), each
    mean over its own strength's images only; text-to-image rows get strength NaN."""
    rows = []
    for strength, shifts in ((0.3, [0.01, 0.03]), (0.7, [0.10, 0.20])):
        for i, shift in enumerate(shifts):
            rows.append(row(lora="ink", scale=0.8, seed=i, sha=f"{strength}-{i}", clip_score=0.8, style_shift=shift,
                            clip_cosine=0.32, lora_effect=0.1, agreement=float("nan")) | {"strength": strength})
    agg = aggregate(pd.DataFrame(rows)).set_index("strength")
    assert list(agg.index) == [0.3, 0.7] and list(agg["images"]) == [2, 2]
    assert agg.loc[0.3, "style_shift_mean"] == pytest.approx(0.02) and agg.loc[0.7, "style_shift_mean"] == pytest.approx(0.15)
    plain = aggregate(pd.DataFrame([r | {"strength": None} for r in rows]))
    assert len(plain) == 1 and plain["images"].iloc[0] == 4 and math.isnan(plain["strength"].iloc[0])


def test_an_image_conditioned_lora_is_measured_against_its_own_inputs_and_strengths_baseline():
    """In an img2img sweep the strength alone moves the picture: a LoRA image at strength s
    from input i is measured against the no-LoRA image of input i at strength s (never the
    first baseline of the prompt and seed), and providers agree only cell for same cell."""
    from lorascope.evals.metrics import baseline_positions, gain_over_baseline

    rng = np.random.default_rng(3)
    rows, vectors = [], {}
    for provider in ("p", "q"):
        for image in ("cat", "dog"):
            for strength in (0.3, 0.7):
                for lora in ("", "ink"):
                    sha = f"{provider}-{image}-{strength}-{lora or 'base'}"
                    v = rng.normal(size=8)
                    vectors[sha] = v / np.linalg.norm(v)
                    rows.append(row(provider=provider, lora=lora, scale=1.0 if lora else float("nan"), sha=sha,
                                    strength=strength, init_image=image, n_loras=1 if lora else 0))
    frame = pd.DataFrame(rows)
    out = image_metrics(frame, vectors, {}, {})
    for i, r in frame.iterrows():
        if not r["lora"]:
            continue
        base = vectors[f"{r['provider']}-{r['init_image']}-{r['strength']}-base"]
        assert out.loc[i, "lora_effect"] == pytest.approx(1.0 - float(np.dot(vectors[r["image_sha256"]], base)))
        twin = vectors[f"{'q' if r['provider'] == 'p' else 'p'}-{r['init_image']}-{r['strength']}-ink"]
        assert out.loc[i, "agreement"] == pytest.approx(float(np.dot(vectors[r["image_sha256"]], twin)))
    positions = baseline_positions(frame)
    assert all(frame.loc[positions[i], ["provider", "strength", "init_image"]].tolist()
               == frame.loc[i, ["provider", "strength", "init_image"]].tolist() for i in range(len(frame)))
    values = pd.Series(np.arange(len(frame), dtype=float), index=frame.index)
    gains = gain_over_baseline(frame, values)
    assert gains[frame.lora == "ink"].tolist() == [1.0] * 8  # each LoRA row sits right after its own baseline
