"""The banner a report shows when its images come from random-weight models (the offline
demo, CI), with how to run the same suite for real: on fal, Novita, HighwayAPI, AI/ML API,
Replicate, WaveSpeedAI or a GPU. The snippet is built from the run's own suite, so it is the suite the reader
just looked at with only the providers changed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import yaml

from lorascope.reports.viewmodels import Banner, CodeSnippet

RANDOM_MARKERS = ("tiny-random",)

#: hosted provider name -> where to get its key. Written without the scheme: the report
#: holds no URL at all, so nothing in it can reach the network.
KEY_PAGES = {
    "fal": "fal.ai/dashboard/keys",
    "novita": "novita.ai/settings/key-management",
    "highway": "highwayapi.ai",
    "aimlapi": "aimlapi.com/app/keys",
    "replicate": "replicate.com/account/api-tokens",
    "wavespeed": "wavespeed.ai/accesskey",
}


def hosted_keys(mode: str = "txt2img", local_inputs: bool = False) -> dict[str, tuple[str, str]]:
    """provider name -> (the variable its class reads the key from, where to get one), for the
    hosts that serve `mode`: the variable comes from the provider itself, so the banner never
    names a stale one."""
    from lorascope.harness.providers import provider_class

    return {name: (provider_class(name).env_key_var, page) for name, page in KEY_PAGES.items()
            if serves(name, mode, local_inputs)}


def serves(provider: str, mode: str, local_inputs: bool = False) -> bool:
    """Whether a provider serves a generation mode (its class's `modes`; text-to-image by
    default), and takes the suite's inputs: a host that fetches inputs by URL only cannot take
    a local file."""
    from lorascope.harness.providers import provider_class

    cls = provider_class(provider)
    takes = not (local_inputs and getattr(cls, "input_forms", "any") == "url")
    return mode in getattr(cls, "modes", frozenset({"txt2img"})) and takes


def _local_inputs(suite: dict[str, Any]) -> bool:
    """Whether any of the suite's input pictures is a local file (not an https URL)."""
    return any(isinstance(v, str) and not v.startswith("https://")
               for item in suite.get("images") or [] if isinstance(item, dict)
               for k, v in item.items() if k in ("image", "mask", "control"))


#: an image-conditioned suite's own keys, kept as they are in the real suite
MODE_KEYS = ("mode", "images", "strengths", "controlnet")
#: the ControlNet users have (docs/local.md, "ControlNet weights"): one file, its config beside it
REAL_CONTROLNET = {"controlnet": "Z-Image-Turbo-Fun-Controlnet-Union.safetensors",
                   "controlnet_config": "union-config"}


def random_generation(frame: pd.DataFrame) -> bool:
    """The images come from the tiny random-weight Z-Image pipeline."""
    for column in ("model_version", "endpoint", "options"):
        if column in frame.columns:
            values = frame[column].dropna().astype(str)
            if any(marker in v for v in values for marker in RANDOM_MARKERS):
                return True
    return False


def random_scores(frame: pd.DataFrame) -> bool:
    """The scores come from a random-weight CLIP (tiny-random, ARCH:random), whatever made
    the images: real pictures scored with it still get numbers without meaning."""
    from lorascope.evals.recommend import random_weight_scores

    if "clip_model" not in frame.columns:
        return False
    return any(random_weight_scores(v) for v in frame["clip_model"].dropna().astype(str).unique())


def uses_random_weights(frame: pd.DataFrame) -> bool:
    """Whether a report of this frame carries the random-weight banner (images or scores)."""
    return random_generation(frame) or random_scores(frame)


EXAMPLE_LORAS = ["classic-painting", "coloring-book"]  # hub LoRAs in the project's loras.yaml


def _fetchable(entries: dict[str, Any]) -> list[str]:
    """Catalogue ids a hosted provider can fetch (hub repo or URL, not a local path)."""
    return [i for i, e in entries.items() if getattr(getattr(e, "source", None), "type", "path") != "path"]


def _real_suite(suite: dict[str, Any], suite_name: str, entries: dict[str, Any]) -> str:
    """The run's suite with the hosted providers and the real local model instead of
    tiny-random. Hosted providers fetch LoRAs by hub repo or URL: LoRAs that are local
    files (the demo's) are swapped for hub LoRAs of the project's catalogue."""
    out: dict[str, Any] = {"name": f"{suite.get('name') or suite_name or 'my-suite'}-real"}
    out["catalogue"] = "loras.yaml"
    mode = suite_mode(suite)
    local = {"model": "Tongyi-MAI/Z-Image-Turbo", **(REAL_CONTROLNET if mode == "controlnet" else {})}
    hosts = ["fal", {"novita": {"concurrency": 4}}, "highway", "aimlapi", "replicate", "wavespeed"]
    # an image-conditioned grid only on the hosts that serve its mode (the others refuse it)
    local_inputs = _local_inputs(suite)
    out["providers"] = [h for h in hosts if serves(h if isinstance(h, str) else next(iter(h)), mode, local_inputs)]
    out["providers"].append({"diffusers": local})
    for key in MODE_KEYS if mode != "txt2img" else ():
        if suite.get(key) is not None:
            out[key] = suite[key]
    if isinstance(out.get("images"), list):  # as a person writes them: no empty mask/control
        out["images"] = [{k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item
                         for item in out["images"]]
    wanted = [x for x in suite.get("loras") or [] if isinstance(x, str)]
    fetchable = _fetchable(entries)
    out["loras"] = [x for x in wanted if x in fetchable] or EXAMPLE_LORAS
    for key in ("scales", "prompts", "seeds"):
        if suite.get(key):
            out[key] = suite[key]
    if isinstance(out.get("prompts"), list):
        out["prompts"] = [{"id": p["id"], "text": p["text"]} if isinstance(p, dict) and {"id", "text"} <= set(p)
                          else p for p in out["prompts"]]
    out.setdefault("scales", [0.5, 0.8, 1.0, 1.5])
    out.setdefault("seeds", [42, 1234])
    out["size"] = "1024x1024"
    out["steps"] = 8
    return yaml.safe_dump(out, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


def suite_mode(suite: dict[str, Any]) -> str:
    return str(suite.get("mode") or "txt2img")


def random_weight_banner(data: Any, howto: bool = True) -> Banner:
    """The plain statement that the images are from random weights; with `howto`, how to
    run the same suite for real (hosted providers' keys, the GPU model)."""
    if not howto:
        return Banner(level="warning", title="These images come from random-weight models", paragraphs=[
            "Both runs used the tiny random-weight Z-Image pipeline (and the tiny random CLIP): the comparison "
            "shows that drift detection works end to end, not anything about a real model or provider."])
    suite = getattr(data, "suite", {}) or {}
    results = getattr(data, "results", None)
    if isinstance(results, pd.DataFrame) and not random_generation(results):
        return Banner(level="warning", title="These scores come from a random-weight CLIP", paragraphs=[
            f"The images are real, but the run was scored with {getattr(data, 'score_model', '') or 'a random-weight CLIP'}, "
            "a CLIP with random weights: CLIPScore, style shift, LoRA effect, agreement, the recommended scales "
            "and the plots carry no meaning about the pictures.",
            "Score it again with real weights (`lorascope score RUN --clip ViT-B-32:openai`, downloaded once, or "
            "LORASCOPE_CLIP_CHECKPOINT pointing at a local .safetensors checkpoint), then render the report again."])
    env_lines = "\n".join(
        f"export {var}=...   # {name}: {where}" for name, (var, where) in hosted_keys(suite_mode(suite), _local_inputs(suite)).items()
    )
    return Banner(
        level="warning",
        title="These images come from random-weight models",
        paragraphs=[
            "This run used the tiny random-weight Z-Image pipeline and a tiny random-weight CLIP, "
            "built in code so the whole product runs offline in under a minute. The pictures are "
            "noise and the scores, recommendations and plots carry no meaning about any real LoRA: "
            "they show what a report looks like and that every stage works end to end.",
            "To run the same grid for real, point the suite at hosted providers (their keys in the "
            "environment) or at the real Z-Image Turbo weights on a GPU, and use a catalogue whose "
            "LoRAs are on the Hugging Face Hub or at an https URL (hosted providers fetch the file "
            "themselves; a local path only works with the diffusers provider). Leave out the "
            "providers you have no key for.",
            *([] if any(x in _fetchable(getattr(data, "loras", {}) or {}) for x in suite.get("loras") or [])
              else ["This run's LoRAs are local files, so the suite below uses "
                    + " and ".join(EXAMPLE_LORAS) + " from the project's loras.yaml (LoRAs on the Hub) instead."]),
        ],
        snippets=[
            CodeSnippet(title="suite.yaml", language="yaml", code=_real_suite(suite, getattr(data, "suite_name", ""), getattr(data, "loras", {}) or {})),
            CodeSnippet(
                title="shell",
                language="sh",
                code=(
                    f"{env_lines}\n"
                    "lorascope run suite.yaml --dry-run        # counts and estimated cost, sends nothing\n"
                    "lorascope run suite.yaml --max-cost 5 --out runs/real\n"
                    "lorascope score runs/real                 # real CLIP weights (ViT-B-32 by default)\n"
                    "lorascope recommend runs/real\n"
                    "lorascope report runs/real"
                ),
            ),
        ],
    )
