"""Generate one image with one provider: the quickest way to try a LoRA at a scale.

Example: lorascope generate --provider fal --lora classic-painting:0.7 --seed 42 "a harbour at dusk" -o out.png

--lora takes a catalogue id (ID or ID:SCALE; default: the entry's recommended scale) or a .safetensors path (PATH or PATH:SCALE; default 1.0), up to 3; catalogue LoRAs add their trigger words to the prompt.

--image FILE (or an https URL) makes it image-to-image, --mask FILE inpainting (white repaints), --strength S (0..1) how far from the input it may go; they are checked (readable PNG/JPEG/WebP, mask size = image size, a mode the provider serves) before anything is sent.

--control FILE (or an https URL) makes it ControlNet: the picture's edges/depth/pose shape the image; --control-scale (0..2), --control-start/--control-end (0..1) and --preprocess (none, canny, depth, pose) are a suite's `controlnet:` settings, each sent only when given (fal takes all four; diffusers takes the scale and needs its `controlnet` setting, e.g. --config controlnet=FILE.safetensors).

Keys and roots come from the provider's variables (FAL_KEY, LORASCOPE_FAL_URL, ...; see docs/providers.md). Exit codes: 0 ok, 1 invalid request or provider error, 2 usage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple, Optional

import typer

MAX_LORAS = 3
_SIZE = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    match = _SIZE.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not WIDTHxHEIGHT (e.g. 1024x768)", param_hint="--size")
    return int(match.group(1)), int(match.group(2))


def parse_pairs(values: list[str], flag: str) -> dict[str, Any]:
    """`key=value` pairs; values read as JSON when they parse (true, 3, 0.5, "x"), else text."""
    pairs: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not key=value", param_hint=flag)
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        pairs[key.strip()] = value
    return pairs


def generate(
    prompt: str = typer.Argument(..., help="The prompt (trigger words are added for catalogue LoRAs)."),
    out: Path = typer.Option(..., "-o", "--out", help="Where to write the image (bytes exactly as returned)."),
    provider: str = typer.Option(..., "--provider", help="fal, novita, highway, aimlapi, replicate, wavespeed, diffusers, or a plugin."),
    lora: list[str] = typer.Option([], "--lora", help="ID[:SCALE] or PATH.safetensors[:SCALE]; repeat up to 3 times."),
    seed: int = typer.Option(..., "--seed", help="Seed (fixed seeds make images comparable)."),
    size: str = typer.Option("1024x1024", "--size", help="WIDTHxHEIGHT."),
    steps: int = typer.Option(8, "--steps", help="Inference steps (Turbo: 8)."),
    fmt: str = typer.Option("png", "--format", help="png, jpeg or webp (where the provider takes it)."),
    option: list[str] = typer.Option([], "--option", help="Provider option key=value (e.g. acceleration=high)."),
    config: list[str] = typer.Option([], "--config", help="Provider setting key=value (e.g. deadline_s=120)."),
    model: Optional[str] = typer.Option(None, "--model", help="Provider setting `model` (diffusers: repo id, folder or tiny-random); same as --config model=..."),
    catalogue: Optional[Path] = typer.Option(None, "--catalogue", help="loras.yaml (default: ./loras.yaml, then the project's)."),
    image: Optional[str] = typer.Option(None, "--image", help="Input picture (PNG/JPEG/WebP file or https URL): image-to-image."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Inpainting mask, same size as --image (white is repainted)."),
    strength: Optional[float] = typer.Option(None, "--strength", help="Denoising strength 0..1 with --image (0 keeps the input)."),
    control: Optional[str] = typer.Option(None, "--control", help="ControlNet control picture (PNG/JPEG/WebP file or https URL)."),
    control_scale: Optional[float] = typer.Option(None, "--control-scale", help="How strongly --control shapes the image, 0..2 (fal and diffusers default 0.75)."),
    control_start: Optional[float] = typer.Option(None, "--control-start", help="Fraction of the steps where control starts, 0..1 (fal)."),
    control_end: Optional[float] = typer.Option(None, "--control-end", help="Fraction of the steps where control ends, 0..1 (fal)."),
    preprocess: Optional[str] = typer.Option(None, "--preprocess", help="none, canny, depth or pose: how fal turns --control into a map."),
) -> None:
    import asyncio

    from rich.console import Console

    from lorascope.harness.errors import ProviderError
    from lorascope.harness.providers import provider_class

    # emoji off: `--lora id:abc:` must print as typed, not as an emoji code
    err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    console = Console(highlight=False, soft_wrap=True, emoji=False)

    # usage problems are collected too, and reported together (exit 2)
    usage: list[str] = []

    def attempt(parse: Any, *args: Any) -> Any:
        try:
            return parse(*args)
        except typer.BadParameter as exc:
            usage.append(f"{exc.param_hint}: {exc.message}")
            return None

    width, height = attempt(parse_size, size) or (0, 0)
    if len(lora) > MAX_LORAS:
        usage.append(f"--lora: at most {MAX_LORAS} LoRAs, got {len(lora)}")
    if fmt not in ("png", "jpeg", "webp"):
        usage.append(f"--format: {fmt!r} is not png, jpeg or webp")
    options = attempt(parse_pairs, option, "--option") or {}
    settings = attempt(parse_pairs, config, "--config") or {}
    try:
        cls = provider_class(provider)
    except KeyError as exc:
        usage.append(f"--provider: {exc.args[0]}")
        cls = None
    if model is not None and cls is not None:
        if "model" not in getattr(cls, "config_model").model_fields:
            usage.append(f"--model: provider {provider!r} has no model setting")
        settings["model"] = model
    if usage:
        raise typer.BadParameter("\n".join(usage))

    # every problem is collected before failing: a bad --lora does not hide a bad size
    specs, entries, problems = _lora_specs(lora, catalogue, bool(getattr(cls, "needs_local_files", False)), err)
    if entries:
        from lorascope.registry.prompts import apply_triggers

        prompt = apply_triggers(prompt, entries)

    from pydantic import ValidationError

    from lorascope.harness.models import GenerationRequest

    inputs, input_problems = input_images(image, mask, strength)
    controls, control_problems = control_inputs(
        control, ControlSettings(scale=control_scale, start=control_start, end=control_end, preprocess=preprocess),
        image_given=image is not None)
    inputs |= controls
    input_problems += control_problems
    problems += input_problems
    instance = request = None
    try:
        instance = cls(settings or None)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, "--config ")
    try:  # with the inputs that are usable, so the provider still says what else it refuses
        request = GenerationRequest(prompt=prompt, width=width, height=height, seed=seed, steps=steps,
                                    loras=tuple(specs), output_format=fmt, options=options, **inputs)
    except ValidationError as exc:
        problems += _pydantic_problems(exc)
    if instance is not None and request is not None:
        problems += instance.validate(request)
    # local preconditions come before the paid request: a paid image must have somewhere to go
    problems += output_problems(out)
    if problems:
        _fail(err, problems, f"{provider} cannot take this request ({len(problems)} problem(s)); nothing was sent:")
    assert instance is not None and request is not None

    async def _run() -> Any:
        async with instance:
            return await instance.generate(request)

    console.print(f"prompt: {prompt}", markup=False)
    try:
        result = asyncio.run(_run())
    except ProviderError as exc:
        err.print(f"{exc.kind}: {exc.message}", markup=False)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err.print("interrupted (a cancel was sent where the provider supports it)")
        raise typer.Exit(130)

    image = result.images[0]
    try:
        _write_atomic(out, image.data)
    except OSError as exc:
        kept = keep_paid_image(image.data, image.format)
        err.print(f"cannot write {out}: {exc.strerror or exc}. The image is paid for and was saved to {kept}",
                  markup=False)
        raise typer.Exit(1)
    suffix = out.suffix.lower().lstrip(".")
    if suffix and {"jpg": "jpeg"}.get(suffix, suffix) != image.format:
        err.print(f"note: {provider} returned {image.format}; the bytes were written unchanged to {out}", markup=False)
    t = result.timings
    console.print(f"wrote {out} ({image.format}, {image.width}x{image.height}, {len(image.data)} bytes)", markup=False)
    console.print(f"seed: {result.seed}   request: {result.request_id or '-'}", markup=False)
    console.print("time: " + "  ".join(
        f"{label} {value:.2f}s" for label, value in
        (("total", t.total_s), ("queue", t.queue_s), ("inference", t.inference_s), ("download", t.download_s),
         ("load", t.load_s)) if value is not None
    ), markup=False)
    usd = "?" if result.cost.usd is None else f"${result.cost.usd:.5f}"
    console.print(f"cost: {usd} ({result.cost.source}{': ' + result.cost.basis if result.cost.basis else ''})", markup=False)
    if image.nsfw:
        err.print("note: the provider flagged this image as NSFW")


def input_images(image: str | None, mask: str | None, strength: float | None) -> tuple[dict[str, Any], list[str]]:
    """The request's input fields from --image/--mask/--strength, and every problem with them
    (unreadable or non-image files, a mask whose size differs, a mask or strength without an
    image, a strength outside 0..1), so they are reported with the rest before anything is paid."""
    fields: dict[str, Any] = {}
    problems: list[str] = []

    def one(value: str, flag: str) -> Any:
        picture, found = _input_image(value, flag)
        problems.extend(found)
        return picture

    picture = one(image, "--image") if image is not None else None
    cover = one(mask, "--mask") if mask is not None else None
    if mask is not None and image is None:
        problems.append("--mask: needs --image (inpainting repaints part of an input)")
    if strength is not None and image is None:
        problems.append("--strength: needs --image (it says how far from the input to go)")
    if strength is not None and not 0.0 <= strength <= 1.0:
        problems.append(f"--strength: {strength} is not between 0 and 1")
    if picture and cover and picture.width and cover.width and (picture.width, picture.height) != (cover.width, cover.height):
        problems.append(f"--mask: {cover.width}x{cover.height} differs from --image's {picture.width}x{picture.height}")
    if picture is not None:  # only the usable ones: a problem above is not reported twice
        fields["init_image"] = picture
        if cover is not None:
            fields["mask_image"] = cover
        if strength is not None and 0.0 <= strength <= 1.0:
            fields["strength"] = strength
    return fields, problems


class ControlSettings(NamedTuple):
    """The ControlNet flags, named as a suite's `controlnet:` block (harness/suite.py ControlSpec)."""

    scale: float | None = None
    start: float | None = None
    end: float | None = None
    preprocess: str | None = None


#: The request field each ControlNet flag fills, its flag, and its range.
_CONTROL_FIELDS = (("scale", "control_scale", "--control-scale", 0.0, 2.0),
                   ("start", "control_start", "--control-start", 0.0, 1.0),
                   ("end", "control_end", "--control-end", 0.0, 1.0))


def control_inputs(control: str | None, settings: ControlSettings,
                   image_given: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The request's ControlNet fields from --control and its settings, and every problem with
    them (an unreadable picture, a setting without --control or out of range, start after
    end, an unknown preprocessor, --control beside --image), found before anything is sent.
    A provider that does not serve ControlNet says so in its own validation."""
    from typing import get_args

    from lorascope.harness.models import Preprocess

    fields: dict[str, Any] = {}
    problems: list[str] = []
    given = [flag for key, _, flag, *_ in _CONTROL_FIELDS if getattr(settings, key) is not None]
    if settings.preprocess is not None:
        given.append("--preprocess")
    if control is None:
        problems += [f"{flag}: needs --control (it is a ControlNet setting)" for flag in given]
        return fields, problems
    if image_given:
        problems.append("--control: not with --image (ControlNet on an input picture, ControlNet inpaint, is not supported)")
    picture, picture_problems = _input_image(control, "--control")
    problems += picture_problems
    for key, field, flag, low, high in _CONTROL_FIELDS:
        value = getattr(settings, key)
        if value is None:
            continue
        if low <= value <= high:
            fields[field] = value
        else:
            problems.append(f"{flag}: {value} is not between {low:g} and {high:g}")
    if "control_start" in fields and "control_end" in fields and fields["control_start"] > fields["control_end"]:
        problems.append(f"--control-start: {settings.start} is after --control-end {settings.end}")
        del fields["control_start"], fields["control_end"]
    if settings.preprocess is not None:
        choices = get_args(Preprocess)
        if settings.preprocess in choices:
            fields["preprocess"] = settings.preprocess
        else:
            problems.append(f"--preprocess: {settings.preprocess!r} is not one of {', '.join(choices)}")
    if picture is None or image_given:  # settings alone make no request; their problems are listed
        return {}, problems
    return {"control_image": picture, **fields}, problems


def _input_image(value: str, flag: str) -> tuple[Any, list[str]]:
    """One input picture: an https URL as is, a local file read and checked."""
    from lorascope.harness.input_images import read_image_file
    from lorascope.harness.models import InputImage

    if value.startswith("https://"):
        return InputImage(url=value, source=value), []
    if "://" in value:
        return None, [f"{flag} {value}: not an https URL or a local file"]
    try:
        return read_image_file(Path(value), value), []
    except ValueError as exc:
        return None, [f"{flag}: {exc}"]


#: Free space `generate` wants beside the output before it pays (images are a few MB at most).
MIN_FREE_BYTES = 64 * 1024 * 1024


def output_problems(out: Path) -> list[str]:
    """Why the image could not be written to `out`, found before the provider is paid: a
    folder, a read-only file or folder, a parent that is a file, a full disk. Probes by
    creating (and removing) a temporary file beside it, as the real write will."""
    import os
    import shutil
    import tempfile

    label = f"-o {out}"
    if out.is_dir():
        return [f"{label}: is a folder; give a file name (e.g. {out / 'image.png'})"]
    if out.exists() and not os.access(out, os.W_OK):
        return [f"{label}: the file exists and is not writable"]
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".lorascope-probe-"):
            pass
    except OSError as exc:
        return [f"{label}: cannot write in {parent}: {exc.strerror or exc}"]
    if out.exists():
        try:
            with open(out, "ab"):
                pass
        except OSError as exc:
            return [f"{label}: cannot overwrite it: {exc.strerror or exc}"]
    free = shutil.disk_usage(parent).free
    if free < MIN_FREE_BYTES:
        return [f"{label}: only {free // 1024**2} MiB free in {parent} (want {MIN_FREE_BYTES // 1024**2} MiB)"]
    return []


def _write_atomic(out: Path, data: bytes) -> None:
    """Write beside `out` and rename, so a failed write never leaves half an image there."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keep_paid_image(data: bytes, fmt: str) -> Path:
    """Save a paid-for image the requested path refused: under $LORASCOPE_CACHE/generated (or
    the user cache), else the temp folder; named by its sha256 so a retry never duplicates it."""
    import hashlib
    import os
    import tempfile

    from lorascope.harness.store import default_cache_dir

    name = f"{hashlib.sha256(data).hexdigest()}.{fmt or 'img'}"
    for folder in (default_cache_dir() / "generated", Path(tempfile.gettempdir()) / "lorascope-generated"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / name
            _write_atomic(target, data)
            return target
        except OSError:
            continue
    fd, tmp = tempfile.mkstemp(suffix=f"-{name}")  # the last resort: wherever mkstemp may write
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return Path(tmp)


def _pydantic_problems(exc: Any, prefix: str = "") -> list[str]:
    return [f"{prefix}{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]


def _lora_specs(values: list[str], catalogue_path: Path | None, local_file: bool, err: Any) -> tuple[list, list, list]:
    """Specs for each --lora, the catalogue entries among them (for trigger words), and the
    problems with the others."""
    from lorascope.harness.lora_specs import LoraOptionError, _split_scale, looks_like_file, parse_lora_option

    catalogue = None
    needs_catalogue = any(not looks_like_file(_split_scale(v.strip())[0]) for v in values)
    if needs_catalogue:
        from lorascope.registry.catalogue import load_catalogue
        from lorascope.registry.problems import CatalogueError

        try:
            catalogue = load_catalogue(catalogue_path)
        except CatalogueError as exc:
            _fail(err, [str(p) for p in getattr(exc, "problems", [exc])], "the catalogue has problems:")
        except OSError as exc:
            _fail(err, [f"cannot read catalogue: {exc}"])
    specs, entries, problems = [], [], []
    for value in values:
        try:
            spec = parse_lora_option(value, catalogue, local_file=local_file)
        except LoraOptionError as exc:
            problems.append(str(exc))
            continue
        except Exception as exc:  # registry.resolve.ResolveError and friends, named by the entry
            problems.append(f"--lora {value}: {exc}")
            continue
        specs.append(spec)
        if spec.id and catalogue is not None:
            entries.append(catalogue.get(spec.id))
    return specs, entries, problems


def _fail(err: Any, problems: list[str], title: str | None = None) -> None:
    err.print(title or f"{len(problems)} problem(s); nothing was sent:", markup=False)
    for problem in problems:
        err.print(f"  {problem}", markup=False)
    raise typer.Exit(1)
