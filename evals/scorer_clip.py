"""CLIP as one scorer among the others: CLIPScore = 2.5 * max(cos(image, prompt), 0).

The numbers are the ones `lorascope score` has always written (evals.scorer embeds, through
the embedding cache); as a plugin scorer CLIP also gets the scalar cache, and `score_run`
then derives style shift, LoRA effect and agreement from the same cached embeddings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from lorascope.evals.scorer import Embedder, parse_clip_spec
from lorascope.evals.scorer_plugin import TINY, Scorer, ScorerContext

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image


def shared_embedder(ctx: ScorerContext, clip: str | None) -> Embedder:
    """One Embedder per CLIP choice per context: CLIP and the aesthetic head on the same
    CLIP share the model and its embeddings."""
    spec = parse_clip_spec(clip)
    registry = ctx.embedders
    if spec.label() not in registry:
        registry[spec.label()] = Embedder(spec, ctx.cache, batch_size=ctx.batch_size, device=ctx.device)
    return registry[spec.label()]


def image_vectors(embedder: Embedder, shas: Sequence[str], images: Sequence["Image"]) -> np.ndarray:
    """Embeddings of decoded images, through the embedding cache (encodes only misses)."""
    found = embedder.cache.get_many(embedder.model_id, "image", shas)
    first = {sha: i for i, sha in reversed(list(enumerate(shas)))}  # one pass per distinct image
    missing = [i for sha, i in first.items() if sha not in found]
    if missing:
        vecs = embedder._model().encode_images([images[i] for i in missing])
        new = {shas[i]: v for i, v in zip(missing, vecs)}
        embedder.cache.put_many(embedder.model_id, "image", new)
        found.update(new)
    return np.stack([found[s] for s in shas])


class ClipScorer(Scorer):
    name = "clip"
    needs_text = True
    weights_help = "open_clip weights chosen by --clip (default ViT-B-32:openai); see evals.scorer"

    def __init__(self, variant: str | None, ctx: ScorerContext) -> None:
        super().__init__(variant, ctx)
        self.embedder = shared_embedder(ctx, TINY if variant == TINY else ctx.clip)

    @property
    def model_id(self) -> str:
        return f"clipscore:{self.embedder.model_id}"

    @property
    def random_weights(self) -> bool:
        return self.embedder.spec.is_tiny or self.embedder.spec.pretrained == "random"

    @property
    def forward_passes(self) -> int:  # type: ignore[override]
        return self.embedder.forward_passes

    @forward_passes.setter
    def forward_passes(self, value: int) -> None:
        pass

    def load(self) -> None:
        self.embedder._model()

    def score_batch(self, shas: Sequence[str], images: Sequence["Image"], prompts: Sequence[str]) -> np.ndarray:
        from lorascope.evals.metrics import clip_score_from_cosine

        imgs = image_vectors(self.embedder, shas, images)
        texts = self.embedder.texts(prompts)
        cos = np.einsum("ij,ij->i", imgs, np.stack([texts[p] for p in prompts]))
        return np.asarray(clip_score_from_cosine(cos), dtype=np.float64)


def clip_mean_std() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """OpenAI CLIP's image normalisation (what CLIPImageProcessor and open_clip default to)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
