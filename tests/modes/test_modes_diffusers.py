"""diffusers' Img2Img and Inpaint pipelines on the tiny random-weight model: built from the
text-to-image pipeline's components (LoRAs loaded once serve every mode), same seed same
pixels, strength 0 gives the input through the VAE, inpaint keeps the unmasked part."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lorascope.harness.models import GenerationRequest, InputImage

SIZE = 64


def _png(img: Image.Image) -> InputImage:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return InputImage(data=buffer.getvalue(), mime="image/png", width=img.width, height=img.height)


def _photo() -> Image.Image:
    rng = np.random.default_rng(5)
    base = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    base[:, : SIZE // 2] = (200, 40, 40)
    base[:, SIZE // 2:] = (30, 60, 210)
    base[SIZE // 4: SIZE // 2, SIZE // 4: 3 * SIZE // 4] = rng.integers(0, 255, (SIZE // 4, SIZE // 2, 3))
    return Image.fromarray(base)


PHOTO = _png(_photo())
MASK_LEFT = _png(Image.fromarray(np.where(np.arange(SIZE)[None, :] < SIZE // 2, 255, 0).astype(np.uint8).repeat(SIZE, 0)))


def pixels(result) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result.images[0].data)).convert("RGB"), dtype=np.float64)


@pytest.fixture(scope="module")
def provider():
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random"})
    provider.load_pipeline()
    return provider


def req(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red and blue wall", "width": SIZE, "height": SIZE, "seed": 3, "steps": 4,
                                "init_image": PHOTO, **kw})


async def test_img2img_same_seed_same_pixels_and_strength_changes_them(provider):
    first = await provider.generate(req(strength=0.5))
    again = await provider.generate(req(strength=0.5))
    stronger = await provider.generate(req(strength=1.0))
    other_seed = await provider.generate(req(strength=0.5, seed=4))
    assert first.images[0].data == again.images[0].data
    assert np.abs(pixels(first) - pixels(stronger)).mean() > 1.0
    assert np.abs(pixels(first) - pixels(other_seed)).mean() > 1.0
    pipe = provider._pipeline
    i2i = pipe.for_mode("img2img")
    assert type(i2i).__name__ == "ZImageImg2ImgPipeline" and i2i.transformer is pipe.pipe.transformer


async def test_strength_zero_is_the_input_through_the_vae(provider):
    import torch

    out = pixels(await provider.generate(req(strength=0.0)))
    pipe = provider._pipeline.pipe
    with torch.no_grad():  # the round trip computed here, with the VAE directly
        x = pipe.image_processor.preprocess(_photo(), height=SIZE, width=SIZE)
        decoded = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode(), return_dict=False)[0]
    expected = np.asarray(pipe.image_processor.postprocess(decoded, output_type="pil")[0], dtype=np.float64)
    assert np.abs(out - expected).max() <= 1.0
    # no denoising: the LoRA-free text-to-image path is not involved, and the seed does not matter
    assert (await provider.generate(req(strength=0.0, seed=99))).images[0].data == \
        (await provider.generate(req(strength=0.0))).images[0].data


async def test_inpaint_keeps_unmasked_pixels_close_to_the_input(provider):
    round_trip = pixels(await provider.generate(req(strength=0.0)))
    painted = pixels(await provider.generate(req(mask_image=MASK_LEFT, strength=1.0)))
    right = slice(SIZE // 2 + 8, SIZE)  # away from the mask edge (the VAE decoder mixes neighbours)
    left = slice(0, SIZE // 2 - 8)
    kept = np.abs(painted[:, right] - round_trip[:, right]).mean()
    repainted = np.abs(painted[:, left] - round_trip[:, left]).mean()
    assert kept < repainted / 2, (kept, repainted)


async def test_batched_seeds_match_single_calls(provider):
    requests = [req(strength=0.6, seed=s) for s in (11, 12)]
    batch = await provider.generate_batch(requests)
    singles = [await provider.generate(r) for r in requests]
    for b, s in zip(batch, singles):
        assert np.abs(pixels(b) - pixels(s)).max() <= 2.0  # batched kernels round differently (docs/local.md)


def test_urls_are_refused(provider):
    url = req(init_image=InputImage(url="https://example.org/a.png"), strength=0.5)
    assert any("needs input images as local files" in p for p in provider.validate(url))


async def test_loras_apply_to_img2img_as_to_text_to_image(provider, tmp_path):
    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.models import LoraSpec

    path = write_lora(tmp_path / "style.safetensors", provider.load_pipeline().transformer, seed=1, strength=2.0)
    base = await provider.generate(req(strength=0.8))
    at_zero = await provider.generate(req(strength=0.8, loras=(LoraSpec(id="s", scale=0.0, path=str(path)),)))
    at_one = await provider.generate(req(strength=0.8, loras=(LoraSpec(id="s", scale=1.0, path=str(path)),)))
    loads = provider.lora_loads
    inpainted = await provider.generate(req(strength=0.8, mask_image=MASK_LEFT,
                                            loras=(LoraSpec(id="s", scale=1.0, path=str(path)),)))
    assert at_zero.images[0].data == base.images[0].data  # scale 0 is the no-LoRA image, bit-exactly
    assert np.abs(pixels(at_one) - pixels(base)).mean() > 1.0
    assert provider.lora_loads == loads and inpainted.images  # the inpaint pipeline shares the loaded adapter
    provider.remove_loras()


@pytest.fixture(scope="module")
def cn_provider():
    from lorascope.harness.providers.local import DiffusersProvider

    provider = DiffusersProvider({"model": "tiny-random", "controlnet": "tiny-random"})
    provider.load_pipeline()
    return provider


def cn_req(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red and blue wall", "width": SIZE, "height": SIZE, "seed": 3, "steps": 2,
                                "control_image": PHOTO, **kw})


async def test_controlnet_follows_the_control_image_and_scale(cn_provider):
    first = await cn_provider.generate(cn_req(control_scale=0.7))
    again = await cn_provider.generate(cn_req(control_scale=0.7))
    weaker = await cn_provider.generate(cn_req(control_scale=0.2))
    flipped = _png(_photo().transpose(Image.FLIP_LEFT_RIGHT))
    other = await cn_provider.generate(cn_req(control_scale=0.7, control_image=flipped))
    assert first.images[0].data == again.images[0].data
    assert np.abs(pixels(first) - pixels(weaker)).mean() > 0.5
    assert np.abs(pixels(first) - pixels(other)).mean() > 0.5
    cache = cn_provider._pipeline
    control = cache.for_mode("controlnet")
    assert type(control).__name__ == "ZImageControlNetPipeline" and control.transformer is cache.pipe.transformer
    assert cn_provider.endpoint(cn_req()) == "diffusers:tiny-random+controlnet:tiny-controlnet-v1"
    assert cn_provider.endpoint(req(strength=0.5)) == "diffusers:tiny-random"  # other modes keep theirs


def test_controlnet_needs_weights_and_refuses_fal_only_settings(provider, cn_provider):
    assert any("needs the diffusers setting `controlnet`" in p for p in provider.validate(cn_req()))
    problems = "\n".join(cn_provider.validate(cn_req(control_end=0.8, preprocess="canny")))
    assert "start/end" in problems and "preprocess 'canny'" in problems
    assert cn_provider.validate(cn_req(control_scale=0.5)) == []


async def test_inputs_of_another_size_are_resized_to_the_request(provider, cn_provider):
    big = _png(_photo().resize((128, 96)))
    big_mask = _png(Image.new("L", (128, 96), 255))
    for request in (req(init_image=big, strength=0.6), req(init_image=big, mask_image=big_mask, strength=1.0),
                    req(init_image=big, strength=0.0)):
        image = (await provider.generate(request)).images[0]
        assert (image.width, image.height) == (SIZE, SIZE)
    image = (await cn_provider.generate(cn_req(control_image=big))).images[0]
    assert (image.width, image.height) == (SIZE, SIZE)
