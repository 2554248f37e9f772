"""`hpsv2`: Human Preference Score v2/v2.1 (Wu et al. 2023; github tgxs002/HPSv2, Apache-2.0)
— open_clip ViT-H-14 fine-tuned on human choices; the score is cos(image, prompt) of the
normalised embeddings (the HPS tables print it x100). v2 and v2.1 are not comparable: the
model id carries the checkpoint's hash.

Weights: `LORASCOPE_HPSV2_CHECKPOINT=FILE` (HPS_v2.1_compressed.pt from hf xswu/HPSv2, read
with `torch.load(weights_only=True)`, or a .safetensors conversion), else
`$LORASCOPE_CACHE/scorers/hpsv2/HPS_v2.1_compressed.pt`. `hpsv2:tiny-random`: the same
open_clip CLIP class at a tiny size, seeded random weights (meaningless numbers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from lorascope.evals.embedding_cache import default_cache_dir
from lorascope.evals.scorer import TINY_CONFIG, ScorerUnavailable
from lorascope.evals.scorer_plugin import TINY, Scorer, ScorerContext
from lorascope.evals.scorer_weights import load_state_dict, weights_sha256

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

CHECKPOINT_ENV = "LORASCOPE_HPSV2_CHECKPOINT"
CHECKPOINT_FILE = "HPS_v2.1_compressed.pt"
ARCH = "ViT-H-14"
TINY_SEED = 20261203
TINY_REVISION = "hpsv2:tiny-random-v1"


def default_checkpoint() -> Path:
    return default_cache_dir() / "scorers" / "hpsv2" / CHECKPOINT_FILE


def checkpoint_path() -> Path:
    env = os.environ.get(CHECKPOINT_ENV)
    return Path(env).expanduser() if env else default_checkpoint()


def download_help(path: Path) -> str:
    return (
        f"hpsv2: no checkpoint at {path}. Download {CHECKPOINT_FILE} (~1.97 GB) from "
        f"https://huggingface.co/xswu/HPSv2/tree/main, put it at {default_checkpoint()} or set "
        f"{CHECKPOINT_ENV}=/path/to/it. `--scorer hpsv2:{TINY}` runs offline with random weights."
    )


def build_tiny() -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) of the tiny random variant."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = open_clip.CLIP(**TINY_CONFIG)
    preprocess = open_clip.image_transform(TINY_CONFIG["vision_cfg"]["image_size"], is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    return model.eval(), preprocess, tokenizer


def build_real(path: Path) -> tuple[Any, Any, Any]:
    """ViT-H-14 with the HPS weights (strict: a wrong file names its missing keys)."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    state = load_state_dict(path, CHECKPOINT_ENV)
    problems = checkpoint_problems(model.state_dict(), state)
    if problems:
        raise ScorerUnavailable(f"{CHECKPOINT_ENV}={path}: not an HPS {ARCH} checkpoint: {problems}")
    model.load_state_dict(state, strict=True)
    return model.eval(), preprocess, open_clip.get_tokenizer(ARCH)


def checkpoint_problems(want: dict, got: dict, show: int = 3) -> str:
    """Missing, unexpected and mis-shaped keys, counted and the first few named, on one line."""
    def few(keys: list[str]) -> str:
        return ", ".join(keys[:show]) + (", ..." if len(keys) > show else "")

    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shapes = [f"{k} {tuple(got[k].shape)} != {tuple(v.shape)}" for k, v in want.items()
              if k in got and tuple(got[k].shape) != tuple(v.shape)]
    parts = [f"{len(keys)} {what} ({few(keys)})" for what, keys in
             (("missing key(s)", missing), ("unexpected key(s)", unexpected), ("shape mismatch(es)", shapes)) if keys]
    return "; ".join(parts)


def hps_scores(model: Any, pixels: Any, tokens: Any) -> Any:
    """cos(image_i, prompt_i) per row, as HPSv2's img_score does (diagonal of image @ text.T)."""
    import torch

    with torch.inference_mode():
        img = model.encode_image(pixels, normalize=True)
        txt = model.encode_text(tokens, normalize=True)
    return (img * txt).sum(dim=-1)


class HpsV2Scorer(Scorer):
    name = "hpsv2"
    variants = (None, TINY)
    needs_text = True
    weights_help = f"{CHECKPOINT_FILE} (hf xswu/HPSv2) via {CHECKPOINT_ENV}"

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
                path = checkpoint_path()
                sha = weights_sha256(path, CHECKPOINT_ENV, self.ctx.cache, download_help(path))
                self._id = f"hpsv2:{ARCH}@sha256:{sha[:16]}"
        return self._id

    def load(self) -> None:
        from lorascope.harness.device import best_device

        self.model_id
        self.device = self.ctx.device or best_device()
        built = build_tiny() if self.variant == TINY else build_real(checkpoint_path())
        self.model, self.preprocess, self.tokenizer = built
        self.model.to(self.device)

    def score_batch(self, shas: Sequence[str], images: Sequence["Image"], prompts: Sequence[str]) -> np.ndarray:
        import torch

        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        tokens = self.tokenizer(list(prompts)).to(self.device)
        out = hps_scores(self.model, pixels, tokens)
        self.forward_passes += 1
        return out.float().cpu().double().numpy()
