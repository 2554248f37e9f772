"""Plugin scorers: parity with an independent computation, the scalar cache, weight files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from lorascope.evals.embedding_cache import EmbeddingCache
from lorascope.evals.scorer import TINY_CONFIG, TINY_WEIGHT_SEED, ScorerUnavailable
from lorascope.evals.scorer_plugin import ScorerContext, available, parse_scorers, score_items

PROMPTS = ["a red fox in snow", "a lighthouse at dusk", "a bowl of ramen", "a castle on a hill", "a tram"]


@pytest.fixture
def items(tmp_path, make_image):
    out = []
    for i, prompt in enumerate(PROMPTS):
        p = make_image(tmp_path / "imgs" / f"{i}.png", seed=100 + i, size=40 + 4 * i)
        out.append((hashlib.sha256(p.read_bytes()).hexdigest(), p, prompt))
    return out


def _ctx(tmp_path, name="cache.db", **kw) -> ScorerContext:
    return ScorerContext(cache=EmbeddingCache(tmp_path / name), device="cpu", **kw)


def _pil(items):
    from PIL import Image

    return [Image.open(p).convert("RGB") for _, p, _ in items]


def _tiny_clip_embeddings(items) -> np.ndarray:
    """Independently of evals.scorer: open_clip's CLIP from the recipe, encode, L2 in numpy."""
    import open_clip
    import torch

    torch.manual_seed(TINY_WEIGHT_SEED)
    model = open_clip.CLIP(**TINY_CONFIG).eval()
    tf = open_clip.image_transform(32, is_train=False)
    with torch.no_grad():
        e = model.encode_image(torch.stack([tf(im) for im in _pil(items)])).numpy().astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _mlp(state: dict, x: np.ndarray) -> np.ndarray:
    for i in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{i}.weight"].double().numpy().T + state[f"layers.{i}.bias"].double().numpy()
    return x[:, 0]


def test_builtins_are_registered_and_unknown_names_listed(tmp_path):
    assert {"clip", "aesthetic", "hpsv2", "pickscore"} <= set(available())
    with pytest.raises(ValueError, match="nope.*bad.*known: aesthetic, clip, hpsv2, pickscore"):
        parse_scorers("clip,nope,bad:x", _ctx(tmp_path))


def test_aesthetic_tiny_matches_an_independent_mlp_on_clip_embeddings(tmp_path, items):
    from lorascope.evals.scorer_aesthetic import random_head

    (scorer,) = parse_scorers("aesthetic:tiny-random", _ctx(tmp_path))
    values, _ = score_items([scorer], items, batch_size=2)
    got = np.array([values["aesthetic"][sha] for sha, _, _ in items])
    want = _mlp(random_head(32).state_dict(), _tiny_clip_embeddings(items))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert scorer.random_weights and len(set(np.round(got, 6))) == len(items)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_aesthetic_head_file_is_loaded_and_drives_the_score(tmp_path, items, monkeypatch, fmt):
    import torch

    from lorascope.evals.scorer_aesthetic import HEAD_ENV, build_head

    torch.manual_seed(7)
    state = {k: v.clone() for k, v in build_head(32).state_dict().items()}
    path = tmp_path / f"head.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    monkeypatch.setenv(HEAD_ENV, str(path))
    (scorer,) = parse_scorers("aesthetic", _ctx(tmp_path, clip="tiny-random"))
    assert "sha256:" in scorer.model_id and not scorer.random_weights
    values, _ = score_items([scorer], items)
    got = np.array([values["aesthetic"][sha] for sha, _, _ in items])
    np.testing.assert_allclose(got, _mlp(state, _tiny_clip_embeddings(items)), atol=1e-5)


def test_aesthetic_without_a_head_says_what_to_download_and_where(tmp_path, items, monkeypatch):
    from lorascope.evals.scorer_aesthetic import HEAD_ENV, HEAD_FILE, default_head_path

    monkeypatch.delenv(HEAD_ENV, raising=False)
    (scorer,) = parse_scorers("aesthetic", _ctx(tmp_path, clip="tiny-random"))
    with pytest.raises(ScorerUnavailable) as err:
        score_items([scorer], items)
    msg = str(err.value)
    assert HEAD_FILE in msg and str(default_head_path()) in msg and HEAD_ENV in msg
    assert "improved-aesthetic-predictor" in msg and "ViT-L-14:openai" in msg


class Payload:  # a pickled object weights_only refuses (a full unpickle would run code)
    pass


def test_a_pickle_that_weights_only_rejects_is_refused_in_one_line(tmp_path, items, monkeypatch):
    import torch

    from lorascope.evals.scorer_aesthetic import HEAD_ENV

    path = tmp_path / "evil.pth"
    torch.save({"layers.0.weight": Payload()}, path)
    monkeypatch.setenv(HEAD_ENV, str(path))
    (scorer,) = parse_scorers("aesthetic", _ctx(tmp_path, clip="tiny-random"))
    with pytest.raises(ScorerUnavailable) as err:
        score_items([scorer], items)
    assert "refused" in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


def test_aesthetic_head_of_the_wrong_size_for_the_clip_is_named(tmp_path, items, monkeypatch):
    from safetensors.torch import save_file

    from lorascope.evals.scorer_aesthetic import HEAD_ENV, build_head

    path = tmp_path / "l14.safetensors"
    save_file({k: v.contiguous() for k, v in build_head(768).state_dict().items()}, str(path))
    monkeypatch.setenv(HEAD_ENV, str(path))
    (scorer,) = parse_scorers("aesthetic", _ctx(tmp_path, clip="tiny-random"))
    with pytest.raises(ScorerUnavailable, match="reads 768-d .* gives 32-d"):
        score_items([scorer], items)


def test_hpsv2_tiny_matches_open_clip_cosine_computed_independently(tmp_path, items):
    import open_clip
    import torch

    from lorascope.evals.scorer_hpsv2 import TINY_SEED

    (scorer,) = parse_scorers("hpsv2:tiny-random", _ctx(tmp_path))
    values, _ = score_items([scorer], items, batch_size=3)
    got = np.array([values["hpsv2"][scorer.key(sha, p)] for sha, _, p in items])
    torch.manual_seed(TINY_SEED)
    model = open_clip.CLIP(**TINY_CONFIG).eval()
    tf = open_clip.image_transform(32, is_train=False)
    tok = open_clip.SimpleTokenizer(context_length=16)
    with torch.no_grad():
        img = model.encode_image(torch.stack([tf(im) for im in _pil(items)])).double().numpy()
        txt = model.encode_text(tok(PROMPTS)).double().numpy()
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    np.testing.assert_allclose(got, (img * txt).sum(1), atol=1e-5)


def _write_clip_processor(folder: Path) -> None:
    """A real CLIPProcessor folder at the tiny size: CLIP's own BPE (from open_clip's bundled
    vocabulary) and CLIP's image normalisation."""
    import json

    import open_clip
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    st = open_clip.SimpleTokenizer()
    folder.mkdir(parents=True)
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # HF's spelling
    vocab = {names.get(k, k): v for k, v in st.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p, _ in merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=proc, tokenizer=tok).save_pretrained(folder)


@pytest.mark.parametrize("variant", ["tiny-random", "folder"])
def test_pickscore_matches_clipmodel_logits_per_text(tmp_path, items, monkeypatch, variant):
    """Independent: CLIPModel's own forward (logits_per_text = logit_scale.exp() * text @ image.T),
    diagonal; for `folder` the model and processor are loaded from disk like the real ones."""
    import torch
    from transformers import AutoProcessor

    from lorascope.evals.scorer_pickscore import MODEL_ENV, PROCESSOR_ENV, build_tiny

    model = build_tiny()
    spec = "pickscore:tiny-random"
    if variant == "folder":
        with torch.no_grad():
            model.logit_scale.fill_(4.0)
        model.save_pretrained(tmp_path / "model", safe_serialization=True)
        _write_clip_processor(tmp_path / "proc")
        monkeypatch.setenv(MODEL_ENV, str(tmp_path / "model"))
        monkeypatch.setenv(PROCESSOR_ENV, str(tmp_path / "proc"))
        spec = "pickscore"
    (scorer,) = parse_scorers(spec, _ctx(tmp_path))
    values, _ = score_items([scorer], items, batch_size=2)
    got = np.array([values["pickscore"][scorer.key(sha, p)] for sha, _, p in items])
    if variant == "folder":
        proc = AutoProcessor.from_pretrained(tmp_path / "proc")
        inputs = proc(text=PROMPTS, images=_pil(items), padding=True, return_tensors="pt")
    else:
        import open_clip

        from lorascope.evals.scorer_clip import clip_mean_std

        tf = open_clip.image_transform(32, is_train=False, mean=clip_mean_std()[0], std=clip_mean_std()[1])
        ids = open_clip.SimpleTokenizer(context_length=16)(PROMPTS)
        inputs = {"pixel_values": torch.stack([tf(im) for im in _pil(items)]), "input_ids": ids,
                  "attention_mask": (ids != 0).long()}
    with torch.no_grad():
        want = model(**inputs).logits_per_text.diagonal().double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.ptp(got) > 0


def test_rescoring_loads_nothing_and_runs_no_forward_pass(tmp_path, items):
    spec = "clip:tiny-random,aesthetic:tiny-random,hpsv2:tiny-random,pickscore:tiny-random"
    first = parse_scorers(spec, _ctx(tmp_path))
    v1, info1 = score_items(first, items, batch_size=4)
    assert all(n == len(items) for n in info1.computed.values())
    assert all(s.loads == 1 for s in first)
    again = parse_scorers(spec, _ctx(tmp_path))
    v2, info2 = score_items(again, items, batch_size=4)
    assert v1 == v2
    assert all(n == 0 for n in info2.computed.values()) and all(n == len(items) for n in info2.cached.values())
    assert [s.loads for s in again] == [0, 0, 0, 0]
    assert sum(s.forward_passes for s in again) == 0
    assert all(e.model is None for e in again[0].ctx.embedders.values())


def test_a_new_prompt_is_a_miss_for_text_scorers_only(tmp_path, items):
    spec = "aesthetic:tiny-random,hpsv2:tiny-random"
    score_items(parse_scorers(spec, _ctx(tmp_path)), items)
    changed = [(sha, p, prompt + " at night") for sha, p, prompt in items]
    _, info = score_items(parse_scorers(spec, _ctx(tmp_path)), changed)
    assert info.computed == {"aesthetic": 0, "hpsv2": len(items)}


def test_batching_does_not_change_scores(tmp_path, items):
    spec = "aesthetic:tiny-random,hpsv2:tiny-random,pickscore:tiny-random"
    one, _ = score_items(parse_scorers(spec, _ctx(tmp_path, "a.db")), items, batch_size=1)
    many, _ = score_items(parse_scorers(spec, _ctx(tmp_path, "b.db")), items, batch_size=8)
    for name in one:
        for key in one[name]:
            assert one[name][key] == pytest.approx(many[name][key], abs=1e-5)


@pytest.fixture
def tiny_arch(monkeypatch):
    """The tiny recipe registered as an open_clip model name, so HPSv2's real loading code
    (create_model_and_transforms by name + a strict checkpoint load) runs on it."""
    import open_clip.factory as factory

    from lorascope.evals import scorer_hpsv2

    name = "lorascope-tiny-test"
    monkeypatch.setitem(factory._MODEL_CONFIGS, name, dict(TINY_CONFIG))
    monkeypatch.setattr(scorer_hpsv2, "ARCH", name)
    return name


def test_hpsv2_checkpoint_file_loads_through_the_real_path(tmp_path, items, monkeypatch, tiny_arch):
    import torch

    from lorascope.evals.scorer_hpsv2 import CHECKPOINT_ENV, build_tiny

    model, _, _ = build_tiny()
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    monkeypatch.setenv(CHECKPOINT_ENV, str(path))
    (real,) = parse_scorers("hpsv2", _ctx(tmp_path, "a.db"))
    (tiny,) = parse_scorers("hpsv2:tiny-random", _ctx(tmp_path, "b.db"))
    assert real.model_id.startswith(f"hpsv2:{tiny_arch}@sha256:") and not real.random_weights
    got, _ = score_items([real], items)
    want, _ = score_items([tiny], items)
    for sha, _, prompt in items:  # same weights, read from the file: the same numbers
        key = real.key(sha, prompt)
        assert got["hpsv2"][key] == pytest.approx(want["hpsv2"][key], abs=1e-5)


def test_hpsv2_wrong_checkpoint_names_the_keys(tmp_path, items, monkeypatch, tiny_arch):
    from safetensors.torch import save_file

    import torch

    from lorascope.evals.scorer_hpsv2 import CHECKPOINT_ENV

    path = tmp_path / "other.safetensors"
    save_file({"visual.proj": torch.zeros(2, 2)}, str(path))
    monkeypatch.setenv(CHECKPOINT_ENV, str(path))
    (scorer,) = parse_scorers("hpsv2", _ctx(tmp_path))
    with pytest.raises(ScorerUnavailable) as err:
        score_items([scorer], items)
    msg = str(err.value)
    assert f"not an HPS {tiny_arch} checkpoint" in msg and "\n" not in msg
    assert "missing key(s) (positional_embedding, text_projection, logit_scale, ...)" in msg
    assert "shape mismatch(es) (visual.proj (2, 2) != (64, 32))" in msg


def test_hpsv2_without_a_checkpoint_says_where_to_get_it(tmp_path, items, monkeypatch):
    from lorascope.evals.scorer_hpsv2 import CHECKPOINT_ENV, default_checkpoint

    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    (scorer,) = parse_scorers("hpsv2", _ctx(tmp_path))
    with pytest.raises(ScorerUnavailable) as err:
        score_items([scorer], items)
    assert "huggingface.co/xswu/HPSv2" in str(err.value) and str(default_checkpoint()) in str(err.value)


def test_choosing_scorers_and_naming_their_weights_imports_no_model_library(tmp_path):
    """A fully cached re-score never needs torch: parsing scorers and computing their model
    ids (the cache keys) must not import it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lorascope.evals.embedding_cache import EmbeddingCache\n"
        "from lorascope.evals.scorer_plugin import ScorerContext, parse_scorers\n"
        f"ctx = ScorerContext(cache=EmbeddingCache({str(tmp_path / 'c.db')!r}))\n"
        "ids = [s.model_id for s in parse_scorers('clip:tiny-random,aesthetic:tiny-random,hpsv2:tiny-random,"
        "pickscore:tiny-random', ctx)]\n"
        "print(len(ids), sorted(m for m in ('torch', 'open_clip', 'transformers', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "4 []"
