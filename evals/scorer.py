"""The open_clip scorer: images and texts to L2-normalised embeddings, cached.

Which model. `--clip` takes `ARCH[:PRETRAINED]`, open_clip's own names:

- default `ViT-B-32:openai` — the model CLIPScore was defined and calibrated with (Hessel et
  al. 2021, "CLIPScore", w = 2.5 for ViT-B/32), so our numbers sit on the scale the
  literature reports; it is also ~4x cheaper than ViT-L/14, which keeps scoring a grid on a
  CPU practical.
- `ViT-L-14:openai` — what torchmetrics' `CLIPScore` and HEIM use; choose it to compare with
  their numbers (keep one model per study: scores of different models are not comparable).
- `tiny-random` — a tiny CLIP with seeded random weights built from a config (no download).
  Its numbers carry no meaning about images; tests, CI and the offline demo use it to run the
  real code path. `ARCH:random` gives a full-size architecture with seeded random weights
  (benchmarks only).

Weights. open_clip downloads a pretrained tag once into the Hugging Face cache; later runs
use that copy offline. `LORASCOPE_CLIP_CHECKPOINT=/path/model.safetensors` loads weights from
a file instead (pickle formats are refused: they execute code when loaded). Without either,
offline, loading fails with `ScorerUnavailable` saying exactly that.

Nothing here imports torch or open_clip until a model is actually needed: when every image
and text is already in the embedding cache, scoring never loads a model at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from lorascope.registry.digest import sha256_file
from lorascope.evals.embedding_cache import EmbeddingCache, text_key

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

DEFAULT_CLIP = "ViT-B-32:openai"
TINY_CLIP = "tiny-random"
CHECKPOINT_ENV = "LORASCOPE_CLIP_CHECKPOINT"
CLIP_ENV = "LORASCOPE_CLIP"

#: The tiny model's recipe (NOTES.md, open_clip section). Bump the revision when it changes:
#: it is part of the model id, so embeddings cached from an older recipe are never reused.
TINY_REVISION = "tiny-random-clip-v1"
TINY_WEIGHT_SEED = 20240611
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"layers": 2, "width": 64, "patch_size": 8, "image_size": 32, "head_width": 32},
    "text_cfg": {"layers": 2, "width": 64, "heads": 2, "context_length": 16},
}
RANDOM_WEIGHT_SEED = 1234
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


class ScorerUnavailable(RuntimeError):
    """The requested CLIP model cannot be loaded here; the message says how to fix it."""


@dataclass(frozen=True)
class ClipSpec:
    """What `--clip` asked for. `model_id` names the weights exactly (it keys the cache)."""

    arch: str
    pretrained: str | None  # an open_clip tag, "random", or None for tiny-random
    checkpoint: Path | None = None

    @property
    def is_tiny(self) -> bool:
        return self.arch == TINY_CLIP

    def label(self) -> str:
        if self.is_tiny:
            return TINY_CLIP
        return f"{self.arch}:{self.pretrained}" if self.pretrained else self.arch


def parse_clip_spec(text: str | None = None) -> ClipSpec:
    """`ARCH[:TAG]` -> ClipSpec; None means `$LORASCOPE_CLIP` or the default."""
    text = (text or os.environ.get(CLIP_ENV) or DEFAULT_CLIP).strip()
    if text in (TINY_CLIP, "tiny", TINY_REVISION):
        return ClipSpec(TINY_CLIP, None)
    if text.startswith("open_clip:"):  # a model id as stored in run.db
        text = text[len("open_clip:") :].split("@", 1)[0]
    arch, _, tag = text.partition(":")
    arch = arch.strip().replace("/", "-")
    if not arch:
        raise ValueError(f"--clip {text!r}: expected ARCH[:PRETRAINED], e.g. {DEFAULT_CLIP}")
    checkpoint = os.environ.get(CHECKPOINT_ENV)
    ckpt = Path(checkpoint).expanduser() if checkpoint and tag != "random" else None
    return ClipSpec(arch, tag.strip() or "openai", ckpt)


class ClipModel:
    """A loaded open_clip model: batches of PIL images / strings -> normalised float32 rows.

    `forward_passes` counts encoder calls (one per batch), `images_encoded`/`texts_encoded`
    the items; tests and benchmarks use them to prove the cache spared the model.
    """

    def __init__(self, model: Any, preprocess: Callable, tokenizer: Callable, device: str, model_id: str) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.model_id = model_id
        self.context_length: int = int(getattr(model, "context_length", 77))
        self.forward_passes = 0
        self.images_encoded = 0
        self.texts_encoded = 0

    def encode_images(self, images: Sequence["Image"]) -> np.ndarray:
        import torch

        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        with torch.inference_mode():
            feats = self.model.encode_image(batch, normalize=True)
        self.forward_passes += 1
        self.images_encoded += len(images)
        return feats.float().cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        # open_clip's tokenizer truncates to the model's context (77 for real CLIP), keeping
        # the end-of-text token, so a long prompt is scored on its first ~75 tokens.
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            feats = self.model.encode_text(tokens, normalize=True)
        self.forward_passes += 1
        self.texts_encoded += len(texts)
        return feats.float().cpu().numpy()


def build_tiny_clip(device: str = "cpu") -> ClipModel:
    """The tiny random CLIP: same weights on every call (seeded, global RNG untouched)."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_WEIGHT_SEED)
        model = open_clip.CLIP(**TINY_CONFIG)
    model.eval().to(device)
    preprocess = open_clip.image_transform(TINY_CONFIG["vision_cfg"]["image_size"], is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    return ClipModel(model, preprocess, tokenizer, device, TINY_REVISION)


def model_id_for(spec: ClipSpec, cache: EmbeddingCache | None = None) -> str:
    """The cache key of the weights: arch+tag, or arch + the checkpoint's content hash."""
    if spec.is_tiny:
        return TINY_REVISION
    if spec.pretrained == "random":
        return f"open_clip:{spec.arch}:random-seed{RANDOM_WEIGHT_SEED}"
    if spec.checkpoint is not None:
        _check_checkpoint(spec.checkpoint)
        sha = cache.checkpoint_sha256(spec.checkpoint) if cache else sha256_file(spec.checkpoint)
        return f"open_clip:{spec.arch}@sha256:{sha[:16]}"
    return f"open_clip:{spec.arch}:{spec.pretrained}"




def _check_checkpoint(path: Path) -> None:
    if not path.is_file():
        raise ScorerUnavailable(f"{CHECKPOINT_ENV}={path}: no such file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ScorerUnavailable(
            f"{CHECKPOINT_ENV}={path}: pickle checkpoints execute code when loaded and are refused; "
            "use the model's .safetensors file (open_clip repos on the Hugging Face Hub ship "
            "open_clip_model.safetensors)"
        )


def load_clip_model(spec: ClipSpec, model_id: str, device: str | None = None) -> ClipModel:
    """Build or load the model `spec` names, or raise `ScorerUnavailable` with the fix."""
    if device is None:
        from lorascope.harness.device import best_device

        device = best_device()
    if spec.is_tiny:
        return build_tiny_clip(device)
    import open_clip
    import torch

    if spec.arch not in open_clip.list_models():
        raise ScorerUnavailable(
            f"unknown CLIP architecture {spec.arch!r}; open_clip knows e.g. ViT-B-32, ViT-L-14 "
            f"(all: python -c 'import open_clip; print(open_clip.list_models())')"
        )
    if spec.pretrained == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHT_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=None)
    else:
        tag_cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
        if not tag_cfg and spec.checkpoint is None:
            tags = open_clip.list_pretrained_tags_by_model(spec.arch)
            raise ScorerUnavailable(
                f"--clip {spec.label()}: open_clip has no pretrained tag {spec.pretrained!r} for "
                f"{spec.arch}; known tags: {', '.join(tags) or 'none'}"
            )
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        source = str(spec.checkpoint) if spec.checkpoint is not None else spec.pretrained
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch, pretrained=source, force_quick_gelu=quick_gelu
            )
        except Exception as exc:  # open_clip wraps download failures in RuntimeError
            if spec.checkpoint is not None:
                raise ScorerUnavailable(
                    f"could not load CLIP weights for {spec.arch} from {CHECKPOINT_ENV}={spec.checkpoint}: {exc}"
                ) from exc
            raise ScorerUnavailable(
                f"CLIP weights {spec.label()} are not on this machine and could not be downloaded "
                f"({type(exc).__name__}: {exc}). Fix: run `lorascope score` once with internet access "
                f"(open_clip caches the weights in the Hugging Face cache), or point {CHECKPOINT_ENV} at a "
                f"local .safetensors checkpoint of {spec.arch}, or use `--clip tiny-random` for an "
                "offline smoke test (its scores carry no meaning)."
            ) from exc
    model.eval().to(device)
    tokenizer = open_clip.get_tokenizer(spec.arch)
    return ClipModel(model, preprocess, tokenizer, device, model_id)


@dataclass
class Embedder:
    """Embeddings for images (by content sha256) and texts, through the cache.

    The model loads on the first cache miss only. `batch_size` images or texts go through
    the encoder per forward pass.
    """

    spec: ClipSpec
    cache: EmbeddingCache
    batch_size: int = 32
    device: str | None = None
    model: ClipModel | None = field(default=None, repr=False)
    model_loads: int = 0

    def __post_init__(self) -> None:
        self.model_id = model_id_for(self.spec, self.cache)

    @classmethod
    def open(cls, clip: str | None = None, cache_path: Path | str | None = None, **kw: Any) -> "Embedder":
        return cls(parse_clip_spec(clip), EmbeddingCache(cache_path), **kw)

    def close(self) -> None:
        self.cache.close()

    def _model(self) -> ClipModel:
        if self.model is None:
            self.model = load_clip_model(self.spec, self.model_id, self.device)
            self.model_loads += 1
        return self.model

    @property
    def forward_passes(self) -> int:
        return self.model.forward_passes if self.model else 0

    @property
    def context_length(self) -> int:
        return self._model().context_length

    def images(
        self,
        items: Sequence[tuple[str, Path]],
        progress: Callable[[int], None] | None = None,
        cached: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """{sha256: vector} for (sha256, file) pairs; only cache misses are read and encoded.

        `progress(n)` is called after each batch with the number of images it embedded.
        `cached`: the cache lookup for these items when the caller already made it."""
        from PIL import Image

        wanted = dict(items)
        found = dict(cached) if cached is not None else self.cache.get_many(self.model_id, "image", wanted)
        missing = [k for k in wanted if k not in found]
        for start in range(0, len(missing), self.batch_size):
            keys = missing[start : start + self.batch_size]
            images = []
            for key in keys:
                with Image.open(wanted[key]) as im:
                    im.load()
                    images.append(im.copy())
            vectors = self._model().encode_images(images)
            batch = dict(zip(keys, vectors))
            self.cache.put_many(self.model_id, "image", batch)
            found.update(batch)
            if progress:
                progress(len(keys))
        return found

    def texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """{text: vector}; only texts not seen before with this model are encoded."""
        unique = list(dict.fromkeys(texts))
        keyed = {text_key(t): t for t in unique}
        cached = self.cache.get_many(self.model_id, "text", keyed)
        found = {keyed[k]: v for k, v in cached.items()}
        missing = [t for t in unique if t not in found]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            vectors = self._model().encode_texts(chunk)
            self.cache.put_many(self.model_id, "text", {text_key(t): v for t, v in zip(chunk, vectors)})
            found.update(zip(chunk, vectors))
        return found
