"""`aesthetic`: the LAION improved aesthetic predictor v2 — an MLP head on the L2-normalised
CLIP image embedding (christophschuhmann/improved-aesthetic-predictor, Apache-2.0).

The published head (`sac+logos+ava1-l14-linearMSE.pth`) reads 768-d OpenAI CLIP ViT-L/14
embeddings: pair it with `--clip ViT-L-14:openai`. The head's input size is read from its
first layer, so the same code runs on any CLIP (a tiny one in tests). Five linear layers,
dropout between the first four, no activations (as published); keys
`layers.{0,2,4,6,7}.{weight,bias}`. Scores sit roughly on 1-10.

Weights: `LORASCOPE_AESTHETIC_HEAD=FILE` (.safetensors, or the original .pth read with
`torch.load(weights_only=True)`), else `$LORASCOPE_CACHE/scorers/aesthetic/<the file>`.
`aesthetic:tiny-random`: tiny-random CLIP + a seeded random head (meaningless numbers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from lorascope.evals.embedding_cache import default_cache_dir
from lorascope.evals.scorer import ScorerUnavailable
from lorascope.evals.scorer_clip import image_vectors, shared_embedder
from lorascope.evals.scorer_plugin import TINY, Scorer, ScorerContext
from lorascope.evals.scorer_weights import load_state_dict, weights_sha256

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

HEAD_ENV = "LORASCOPE_AESTHETIC_HEAD"
HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"
HEAD_URL = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/" + HEAD_FILE.replace("+", "%2B")
HIDDEN = (1024, 128, 64, 16)
KEYS = tuple(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))
RANDOM_SEED = 20261202


def default_head_path() -> Path:
    return default_cache_dir() / "scorers" / "aesthetic" / HEAD_FILE


def head_path() -> Path:
    env = os.environ.get(HEAD_ENV)
    return Path(env).expanduser() if env else default_head_path()


def download_help(path: Path) -> str:
    return (
        f"aesthetic: no head file at {path}. Download {HEAD_FILE} (3,714,759 bytes, Apache-2.0) from "
        f"{HEAD_URL} and put it at {default_head_path()} or set {HEAD_ENV}=/path/to/it "
        "(a .safetensors conversion works too); pair it with --clip ViT-L-14:openai "
        "(the head reads 768-d ViT-L/14 embeddings). `--scorer aesthetic:tiny-random` runs offline "
        "with random weights (meaningless numbers)."
    )


def build_head(dim: int) -> Any:
    """The published MLP with input size `dim` (768 for ViT-L/14)."""
    from torch import nn

    class AestheticHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(dim, HIDDEN[0]), nn.Dropout(0.2),
                nn.Linear(HIDDEN[0], HIDDEN[1]), nn.Dropout(0.2),
                nn.Linear(HIDDEN[1], HIDDEN[2]), nn.Dropout(0.1),
                nn.Linear(HIDDEN[2], HIDDEN[3]),
                nn.Linear(HIDDEN[3], 1),
            )

        def forward(self, x: Any) -> Any:
            return self.layers(x)

    return AestheticHead()


def random_head(dim: int) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build_head(dim).eval()


def head_from_state_dict(state: dict, where: str) -> Any:
    """Every problem with the keys and shapes at once, then the loaded head."""
    problems = [f"missing {k}" for k in KEYS if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in KEYS]
    if not problems:
        dim = int(state["layers.0.weight"].shape[1])
        want = build_head(dim).state_dict()
        problems += [f"{k}: shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
                     for k, v in want.items() if tuple(state[k].shape) != tuple(v.shape)]
    if problems:
        raise ScorerUnavailable(f"{where}: not an aesthetic predictor v2 head: " + "; ".join(problems))
    head = build_head(dim)
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return head.eval()


class AestheticScorer(Scorer):
    name = "aesthetic"
    variants = (None, TINY)
    needs_text = False
    weights_help = f"{HEAD_FILE} via {HEAD_ENV}, on the --clip image embedding (ViT-L-14:openai)"

    def __init__(self, variant: str | None, ctx: ScorerContext) -> None:
        super().__init__(variant, ctx)
        self.embedder = shared_embedder(ctx, TINY if variant == TINY else ctx.clip)
        self.head: Any = None
        self._id: str | None = None

    @property
    def model_id(self) -> str:
        if self._id is None:
            if self.variant == TINY:
                head = f"random-seed{RANDOM_SEED}"
            else:
                path = head_path()
                head = "sha256:" + weights_sha256(path, HEAD_ENV, self.ctx.cache, download_help(path))[:16]
            self._id = f"aesthetic-v2@{head}+{self.embedder.model_id}"
        return self._id

    def load(self) -> None:
        self.model_id  # a missing head fails before CLIP is loaded
        if self.variant == TINY:
            self.head = None  # sized on the first batch, from the embedding
        else:
            path = head_path()
            self.head = head_from_state_dict(load_state_dict(path, HEAD_ENV), f"{HEAD_ENV}={path}")

    def score_batch(self, shas: Sequence[str], images: Sequence["Image"], prompts: Sequence[str]) -> np.ndarray:
        import torch

        emb = image_vectors(self.embedder, shas, images)
        if self.head is None:
            self.head = random_head(emb.shape[1])
        dim = self.head.layers[0].in_features
        if emb.shape[1] != dim:
            raise ScorerUnavailable(
                f"aesthetic: the head reads {dim}-d image embeddings but --clip {self.embedder.spec.label()} "
                f"gives {emb.shape[1]}-d; the published head pairs with --clip ViT-L-14:openai"
            )
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)  # the predictor's own normalisation
        with torch.inference_mode():
            out = self.head(torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)))
        self.forward_passes += 1
        return out[:, 0].double().numpy()
