"""`pickscore`: PickScore v1 (Kirstain et al. 2023, hf yuvalkirstain/PickScore_v1) — a CLIP-H
fine-tuned on Pick-a-Pic choices, in transformers format. Score = logit_scale.exp() *
cos(prompt, image), as the model card computes it; a softmax over images of one prompt gives
the probability a person picks each.

Weights: `LORASCOPE_PICKSCORE_MODEL=DIR` (a folder with config.json + model.safetensors, e.g.
a download of yuvalkirstain/PickScore_v1), else that repo in the Hugging Face cache; the
processor from `LORASCOPE_PICKSCORE_PROCESSOR` or laion/CLIP-ViT-H-14-laion2B-s32B-b79K in
the cache. Nothing is downloaded at scoring time (safetensors only: no pickle).
`pickscore:tiny-random`: transformers' CLIPModel at a tiny size, seeded random weights, with
open_clip's CLIP BPE tokenizer and CLIP's image normalisation (meaningless numbers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from lorascope.evals.scorer import ScorerUnavailable
from lorascope.evals.scorer_plugin import TINY, Scorer, ScorerContext

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

MODEL_ENV = "LORASCOPE_PICKSCORE_MODEL"
PROCESSOR_ENV = "LORASCOPE_PICKSCORE_PROCESSOR"
MODEL_REPO = "yuvalkirstain/PickScore_v1"
PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
TINY_SEED = 20261204
TINY_REVISION = "pickscore:tiny-random-v1"
TINY_CONTEXT = 16
TINY_IMAGE = 32


def tiny_config() -> Any:
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=TINY_CONTEXT, hidden_act="gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=TINY_IMAGE, patch_size=8, hidden_act="gelu"),
        projection_dim=24,
    )


def build_tiny() -> Any:
    import torch
    from transformers import CLIPModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = CLIPModel(tiny_config())
    return model.eval()


def model_dir() -> Path | None:
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env).expanduser()
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(MODEL_REPO, "model.safetensors")
    return Path(found).parent if isinstance(found, str) else None


def download_help(where: Path | None) -> str:
    at = f" at {where}" if where else ""
    return (
        f"pickscore: no model{at}. Download {MODEL_REPO} (config.json + model.safetensors, 3.94 GB) and "
        f"the processor {PROCESSOR_REPO} (`hf download {MODEL_REPO} --include config.json model.safetensors` "
        f"and `hf download {PROCESSOR_REPO} --exclude '*.bin' '*.safetensors'`), or set {MODEL_ENV}=DIR "
        f"(and {PROCESSOR_ENV}=DIR). `--scorer pickscore:{TINY}` runs offline with random weights."
    )


def pick_scores(model: Any, pixel_values: Any, input_ids: Any, attention_mask: Any) -> Any:
    """logit_scale.exp() * cos(text_i, image_i), as the PickScore model card computes it."""
    import torch

    with torch.inference_mode():
        img = model.get_image_features(pixel_values=pixel_values)
        txt = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        img = getattr(img, "pooler_output", img)  # transformers 5 returns an output object
        txt = getattr(txt, "pooler_output", txt)
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return model.logit_scale.exp() * (img * txt).sum(dim=-1)


class PickScoreScorer(Scorer):
    name = "pickscore"
    variants = (None, TINY)
    needs_text = True
    weights_help = f"{MODEL_REPO} (safetensors) via {MODEL_ENV} or the Hugging Face cache"

    def __init__(self, variant: str | None, ctx: ScorerContext) -> None:
        super().__init__(variant, ctx)
        self._id: str | None = None
        self.model: Any = None

    @property
    def model_id(self) -> str:
        if self._id is None:
            if self.variant == TINY:
                self._id = TINY_REVISION
            else:
                where = model_dir()
                weights = where / "model.safetensors" if where else None
                if weights is None or not weights.is_file():
                    raise ScorerUnavailable(download_help(where))
                self._id = f"pickscore:{MODEL_REPO}@sha256:{self.ctx.cache.checkpoint_sha256(weights)[:16]}"
        return self._id

    def load(self) -> None:
        from lorascope.harness.device import best_device

        self.model_id
        self.device = self.ctx.device or best_device()
        if self.variant == TINY:
            import open_clip

            from lorascope.evals.scorer_clip import clip_mean_std

            self.model = build_tiny()
            mean, std = clip_mean_std()
            self._image_tf = open_clip.image_transform(TINY_IMAGE, is_train=False, mean=mean, std=std)
            self._tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONTEXT)
            self.processor = None
        else:
            from transformers import AutoProcessor, CLIPModel

            where = model_dir()
            proc = os.environ.get(PROCESSOR_ENV) or PROCESSOR_REPO
            try:
                self.processor = AutoProcessor.from_pretrained(proc, local_files_only=True)
                self.model = CLIPModel.from_pretrained(str(where), use_safetensors=True, local_files_only=True).eval()
            except (OSError, ValueError) as exc:
                first = " ".join(str(exc).split())[:200]  # one line
                raise ScorerUnavailable(f"{download_help(where)} ({type(exc).__name__}: {first})") from None
        self.model.to(self.device)

    def inputs(self, images: Sequence["Image"], prompts: Sequence[str]) -> tuple[Any, Any, Any]:
        import torch

        if self.processor is None:
            pixels = torch.stack([self._image_tf(im) for im in images])
            ids = self._tokenizer(list(prompts))
            mask = (ids != 0).long()
        else:
            px = self.processor(images=list(images), return_tensors="pt")
            # CLIP's 77 positions (the model's own limit when smaller): longer prompts are truncated
            limit = min(77, int(self.model.config.text_config.max_position_embeddings))
            tx = self.processor(text=list(prompts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
            pixels, ids, mask = px["pixel_values"], tx["input_ids"], tx["attention_mask"]
        return pixels.to(self.device), ids.to(self.device), mask.to(self.device)

    def score_batch(self, shas: Sequence[str], images: Sequence["Image"], prompts: Sequence[str]) -> np.ndarray:
        out = pick_scores(self.model, *self.inputs(images, prompts))
        self.forward_passes += 1
        return out.float().cpu().double().numpy()
