"""The open_clip scorer: tiny-random determinism, the embedding cache, model errors, parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lorascope.evals.embedding_cache import EmbeddingCache, text_key
from lorascope.evals.metrics import clip_score_from_cosine
from lorascope.evals.scorer import (
    CHECKPOINT_ENV,
    DEFAULT_CLIP,
    Embedder,
    ScorerUnavailable,
    build_tiny_clip,
    load_clip_model,
    model_id_for,
    parse_clip_spec,
)



def _images(tmp_path: Path, n: int) -> list[tuple[str, Path]]:
    import hashlib

    from PIL import Image

    def noise_image(path: Path, seed: int) -> Path:
        arr = np.random.default_rng(seed).integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        return path

    items = []
    for i in range(n):
        p = noise_image(tmp_path / "imgs" / f"{i}.png", seed=i)
        items.append((hashlib.sha256(p.read_bytes()).hexdigest(), p))
    return items


def test_tiny_random_has_the_same_weights_every_time():
    a, b = build_tiny_clip(), build_tiny_clip()
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all((sa[k] == sb[k]).all() for k in sa)
    assert a.context_length == 16 and a.model_id == "tiny-random-clip-v1"


def test_embeddings_are_normalised_and_batching_does_not_change_them(tmp_path):
    items = _images(tmp_path, 5)
    one = Embedder.open("tiny-random", cache_path=tmp_path / "a.db", batch_size=1)
    many = Embedder.open("tiny-random", cache_path=tmp_path / "b.db", batch_size=8)
    v1, v8 = one.images(items), many.images(items)
    assert one.forward_passes == 5 and many.forward_passes == 1
    for sha, _ in items:
        assert np.linalg.norm(v1[sha]) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(v1[sha], v8[sha], atol=1e-5)
    # distinct images give distinct embeddings
    assert not np.allclose(v1[items[0][0]], v1[items[1][0]])


def test_rescoring_from_the_cache_does_no_forward_pass(tmp_path):
    items = _images(tmp_path, 6)
    texts = ["a cat on a sofa", "a lighthouse at dusk"]
    first = Embedder.open("tiny-random", batch_size=4)
    img1, txt1 = first.images(items), first.texts(texts)
    assert first.model_loads == 1 and first.forward_passes == 3  # 2 image batches + 1 text batch
    first.close()

    again = Embedder.open("tiny-random", batch_size=4)
    img2, txt2 = again.images(items), again.texts(texts)
    assert again.model_loads == 0 and again.forward_passes == 0
    for sha, _ in items:
        np.testing.assert_array_equal(img1[sha], img2[sha])
    np.testing.assert_array_equal(txt1[texts[0]], txt2[texts[0]])

    # one new image: exactly one forward pass, for that image only
    extra = _images(tmp_path / "more", 7)[-1:]
    again.images(items + extra)
    assert again.forward_passes == 1 and again.model.images_encoded == 1


def test_the_cache_is_keyed_by_model(tmp_path):
    cache = EmbeddingCache(tmp_path / "e.db")
    cache.put_many("model-a", "text", {text_key("x"): np.ones(4, dtype=np.float32)})
    assert cache.get_many("model-b", "text", [text_key("x")]) == {}
    assert list(cache.get_many("model-a", "text", [text_key("x")])) == [text_key("x")]


def test_long_prompts_are_truncated_to_the_context():
    model = build_tiny_clip()
    long_prompt = " ".join(["a lighthouse on a cliff at dusk"] * 30)
    head = " ".join(long_prompt.split()[:10])
    vecs = model.encode_texts([long_prompt, head])
    assert vecs.shape == (2, 32)
    # the tiny model's context is 16 tokens: words past it cannot change the embedding
    longer = model.encode_texts([long_prompt + " and a purple dragon"])
    np.testing.assert_allclose(vecs[0], longer[0], atol=1e-6)


def test_default_clip_is_vit_b_32_openai(monkeypatch):
    spec = parse_clip_spec(None)
    assert DEFAULT_CLIP == "ViT-B-32:openai"
    assert (spec.arch, spec.pretrained) == ("ViT-B-32", "openai")
    monkeypatch.setenv("LORASCOPE_CLIP", "ViT-L-14:openai")
    assert parse_clip_spec(None).arch == "ViT-L-14"
    assert parse_clip_spec("tiny-random").is_tiny


def test_offline_without_weights_says_how_to_fix_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = parse_clip_spec("ViT-B-32:openai")
    with pytest.raises(ScorerUnavailable) as err:
        load_clip_model(spec, model_id_for(spec), device="cpu")
    message = str(err.value)
    assert CHECKPOINT_ENV in message and "once with internet access" in message and "tiny-random" in message


def test_unknown_tag_and_architecture_are_named(tmp_path):
    with pytest.raises(ScorerUnavailable, match="no pretrained tag 'nope'"):
        spec = parse_clip_spec("ViT-B-32:nope")
        load_clip_model(spec, model_id_for(spec), device="cpu")
    with pytest.raises(ScorerUnavailable, match="unknown CLIP architecture 'ViT-Q-99'"):
        spec = parse_clip_spec("ViT-Q-99:openai")
        load_clip_model(spec, model_id_for(spec), device="cpu")


def test_checkpoint_env_is_keyed_by_content_and_refuses_pickle(tmp_path, monkeypatch):
    ckpt = tmp_path / "clip.safetensors"
    ckpt.write_bytes(b"not really weights")
    monkeypatch.setenv(CHECKPOINT_ENV, str(ckpt))
    spec = parse_clip_spec("ViT-B-32:openai")
    assert spec.checkpoint == ckpt
    first = model_id_for(spec, EmbeddingCache(tmp_path / "e.db"))
    ckpt.write_bytes(b"other weights, other scores")
    assert model_id_for(spec, EmbeddingCache(tmp_path / "e2.db")) != first

    pickled = tmp_path / "clip.pt"
    pickled.write_bytes(b"x")
    monkeypatch.setenv(CHECKPOINT_ENV, str(pickled))
    with pytest.raises(ScorerUnavailable, match="pickle"):
        model_id_for(parse_clip_spec("ViT-B-32:openai"))
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ScorerUnavailable, match="no such file"):
        model_id_for(parse_clip_spec("ViT-B-32:openai"))


def test_clip_score_matches_the_torchmetrics_formula(tmp_path):
    """Reference: torchmetrics' `_clip_score_update` — features divided by their L2 norm,
    score = 100 * (img * txt).sum(-1), clamped at 0. CLIPScore (w = 2.5) is that / 40."""
    import torch
    from PIL import Image

    model = build_tiny_clip()
    items = _images(tmp_path, 4)
    texts = ["a photo of noise", "static on an old television", "a red square", "colourful sand"]
    images = [Image.open(p).convert("RGB") for _, p in items]
    with torch.no_grad():
        raw_img = model.model.encode_image(torch.stack([model.preprocess(im) for im in images]))
        raw_txt = model.model.encode_text(model.tokenizer(texts))
    ref_img = raw_img / raw_img.norm(p=2, dim=-1, keepdim=True)
    ref_txt = raw_txt / raw_txt.norm(p=2, dim=-1, keepdim=True)
    reference = torch.clamp(100 * (ref_img * ref_txt).sum(axis=-1), min=0).numpy()

    ours_img, ours_txt = model.encode_images(images), model.encode_texts(texts)
    ours = clip_score_from_cosine((ours_img * ours_txt).sum(-1))
    np.testing.assert_allclose(ours, reference / 40.0, atol=1e-5)
    # a negative cosine scores 0 in both
    assert clip_score_from_cosine(-0.3) == 0.0
