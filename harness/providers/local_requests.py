"""The local provider's request mapping: a neutral `GenerationRequest` checked against what
the pipeline accepts, turned into one `ZImagePipeline` call (Turbo's settings passed
explicitly, one seeded generator per image), and the pipeline's images turned back into
`GenerationResult`s.

Why explicit: `ZImagePipeline.__call__`'s own defaults are not Turbo's (50 steps, guidance
5.0); Turbo is 8 passes without guidance. One generator per image means the same request
gives the same pixels, and a batched call gives each seed its single-call image.
"""

from __future__ import annotations

import io
import secrets
import time
from typing import TYPE_CHECKING, Any

from lorascope.harness.errors import InvalidRequest
from lorascope.harness.models import Cost, GeneratedImage, GenerationRequest, GenerationResult, InputImage, Timings

if TYPE_CHECKING:
    from lorascope.harness.providers.local import DiffusersConfig

MAX_LORAS = 3

JPEG_WEBP_QUALITY = 95


def free() -> Cost:
    """Local generation costs no money (a fresh object each time: results are mutable)."""
    return Cost(usd=0.0, source="free", basis="local pipeline")


def request_problems(request: GenerationRequest, *, model: str, size_multiple: int,
                     known_options: frozenset[str], provider_name: str) -> list[str]:
    """Everything but the LoRA files and the mode: size, steps, images, seed, options, LoRA count."""
    problems: list[str] = []
    for side, value in (("width", request.width), ("height", request.height)):
        if value <= 0 or value % size_multiple:
            problems.append(f"{side} {value} is not a positive multiple of {size_multiple} for {model}")
    if request.steps < 1:
        problems.append(f"steps {request.steps} must be at least 1")
    if request.num_images < 1:
        problems.append(f"num_images {request.num_images} must be at least 1")
    if request.seed is not None and not 0 <= request.seed < 2**63:
        problems.append(f"seed {request.seed} must be in [0, 2**63)")
    for key in request.options:
        if key not in known_options:
            problems.append(
                f"option {key!r} is not understood by the {provider_name} provider "
                f"(known: {', '.join(sorted(known_options))})"
            )
    if len(request.loras) > MAX_LORAS:
        problems.append(f"{len(request.loras)} LoRAs given; at most {MAX_LORAS} per request")
    return problems


def check_batchable(provider_name: str, requests: list[GenerationRequest]) -> None:
    first = requests[0].model_copy(update={"seed": None})
    for other in requests[1:]:
        if other.model_copy(update={"seed": None}) != first:
            raise InvalidRequest(provider_name, ["generate_batch takes requests that differ only by seed"])


def draw_seeds(requests: list[GenerationRequest]) -> tuple[list[int], list[bool], list[int]]:
    """Per request: its seed (drawn when unseeded) and whether it was drawn; per image: the
    request's seed + the image's index."""
    seeds: list[int] = []
    drawn: list[bool] = []
    for request in requests:
        base_seed = request.seed if request.seed is not None else secrets.randbits(63)
        drawn.append(request.seed is None)
        seeds.append(base_seed)
    num_images = requests[0].num_images
    image_seeds = [s + i for s in seeds for i in range(num_images)]
    return seeds, drawn, image_seeds


def pipeline_kwargs(template: GenerationRequest, config: "DiffusersConfig", generators: list[Any]) -> dict[str, Any]:
    """The `ZImagePipeline.__call__` arguments: one prompt per generator, Turbo's steps and
    guidance passed explicitly (a request's options win over the provider's settings). For
    img2img/inpaint also the input (and mask) once per generator, so each image is encoded
    with its own seed and a batched call gives each seed its single-call image, and the
    strength (passed explicitly: the pipelines' defaults differ, 0.6 and 1.0)."""
    options = template.options
    size = (template.width, template.height)
    conditioning: dict[str, Any] = {}
    if template.init_image is not None:
        picture = to_pil(template.init_image, "RGB", size)
        conditioning["image"] = [picture] * len(generators)
        conditioning["strength"] = float(template.strength if template.strength is not None
                                         else DEFAULT_STRENGTH[template.mode])
    if template.mask_image is not None:
        conditioning["mask_image"] = [to_pil(template.mask_image, "L", size)] * len(generators)
    if template.control_image is not None:  # one picture: the pipeline repeats it per image
        conditioning["control_image"] = to_pil(template.control_image, "RGB", size)
        conditioning["controlnet_conditioning_scale"] = float(
            template.control_scale if template.control_scale is not None else DEFAULT_CONTROL_SCALE)
    return conditioning | {
        "prompt": [template.prompt] * len(generators),
        "height": template.height,
        "width": template.width,
        "num_inference_steps": template.steps,
        "guidance_scale": float(options.get("guidance_scale", config.guidance_scale)),
        "max_sequence_length": int(options.get("max_sequence_length", config.max_sequence_length)),
        "generator": generators,
        "output_type": "pil",
    }


#: The pipelines' own strength defaults, used when a request gives none.
DEFAULT_STRENGTH = {"img2img": 0.6, "inpaint": 1.0}
#: `ZImageControlNetPipeline`'s default `controlnet_conditioning_scale` (fal's too).
DEFAULT_CONTROL_SCALE = 0.75


def controlnet_problems(request: GenerationRequest, controlnet: str | None) -> list[str]:
    """What the local ControlNet path cannot do: no ControlNet configured, fal's
    start/end window and preprocessors (diffusers' pipeline has neither)."""
    if request.control_image is None:
        return []
    problems = []
    if not controlnet:
        problems.append("mode controlnet needs the diffusers setting `controlnet` (a .safetensors file, a folder, "
                        "a hub repo id such as alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union, or tiny-random)")
    if request.control_start is not None or request.control_end is not None:
        problems.append("controlnet start/end: diffusers' ZImageControlNetPipeline has no such window (fal only)")
    if request.preprocess not in (None, "none"):
        problems.append(f"controlnet preprocess {request.preprocess!r}: the local pipeline takes a ready edge/depth/"
                        "pose map as the control image (fal only preprocesses)")
    return problems


def to_pil(image: InputImage, mode: str, size: tuple[int, int]) -> Any:
    """An input's bytes as a Pillow image in `mode` (RGB picture, L mask) at the request's
    `size` (width, height). Resized here because diffusers' img2img/inpaint pipelines take
    their size from the input when it differs, and their noise from the request: a 512 px
    input in a 64 px request would not fit. Masks are resized without blending."""
    from PIL import Image

    if image.data is None:
        raise InvalidRequest("diffusers", [f"input {image.label} is a URL; the local pipeline needs the file"])
    with Image.open(io.BytesIO(image.data)) as opened:
        converted = opened.convert(mode)
    if converted.size != size:
        converted = converted.resize(size, Image.Resampling.NEAREST if mode == "L" else Image.Resampling.LANCZOS)
    return converted


def denoising_steps(request: GenerationRequest) -> int:
    """How many denoising steps img2img/inpaint run at the request's strength (diffusers'
    `get_timesteps`): 0 means the input comes back through the VAE only."""
    if request.init_image is None:
        return request.steps
    strength = request.strength if request.strength is not None else DEFAULT_STRENGTH[request.mode]
    init = min(request.steps * strength, request.steps)
    return request.steps - int(max(request.steps - init, 0))


def vae_round_trip(pipe: Any, template: GenerationRequest, count: int) -> list[Any]:
    """Strength 0 (no denoising step; diffusers would raise): the input encoded and decoded
    by the pipeline's VAE, the latent distribution's mode, no noise. What strength 0 means:
    the input, within the VAE's round trip."""
    import torch

    processor = pipe.image_processor
    picture = to_pil(template.init_image, "RGB", (template.width, template.height))
    pixels = processor.preprocess(picture, height=template.height, width=template.width)
    vae = pipe.vae
    with torch.no_grad():
        latents = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
        decoded = vae.decode(latents, return_dict=False)[0]
    images = processor.postprocess(decoded, output_type="pil")
    return images * count


def encode(image: Any, fmt: str) -> GeneratedImage:
    """Pillow encode; png is lossless, jpeg/webp at quality 95. No timestamps or other
    varying metadata, so the same pixels give the same bytes."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    elif fmt == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_WEBP_QUALITY)
    else:
        image.save(buffer, format="WEBP", quality=JPEG_WEBP_QUALITY)
    return GeneratedImage(data=buffer.getvalue(), format=fmt, width=image.width, height=image.height)


def to_results(provider_name: str, requests: list[GenerationRequest], images: list[GeneratedImage], *,
               seeds: list[int], drawn: list[bool], image_seeds: list[int], started: float, inference_s: float,
               load_s: float, pipeline_load_s: float | None, adapters: list[list[str]],
               software: dict[str, str]) -> list[GenerationResult]:
    """Split one pipeline call's images back into one result per request. The first result
    carries the load time; inference time is shared out per image."""
    per_request = requests[0].num_images
    per_image_s = inference_s / len(image_seeds)
    results = []
    for index in range(len(requests)):
        own = slice(index * per_request, (index + 1) * per_request)
        results.append(
            GenerationResult(
                provider=provider_name,
                images=images[own],
                seed=seeds[index],
                timings=Timings(
                    total_s=time.perf_counter() - started,
                    inference_s=per_image_s * per_request,
                    load_s=load_s if index == 0 else 0.0,
                ),
                cost=free(),
                metadata={
                    "image_seeds": image_seeds[own],
                    "seed_drawn": drawn[index],
                    "batch_size": len(image_seeds),
                    "per_image_inference_s": per_image_s,
                    "pipeline_load_s": pipeline_load_s,
                    "adapters": adapters[index],
                },
                software=software,
            )
        )
    return results
