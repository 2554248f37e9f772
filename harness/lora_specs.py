"""From catalogue entries (or a `--lora` option) to the `LoraSpec`s a request carries.

Hosted providers need the reference forms (URL, repo id); the local provider needs a
verified file on disk, so `local_file=True` resolves the entry (download once, sha256
checked) and fills `path` and `sha256`. A bare `.safetensors` path given on the command line
is hashed here so the fingerprint names its content, not its location.
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import TYPE_CHECKING

from lorascope.harness.models import LoraSpec
from lorascope.registry.models import PICKLE_SUFFIXES, LoraEntry

if TYPE_CHECKING:
    from lorascope.registry.catalogue import Catalogue


class LoraOptionError(ValueError):
    """A `--lora` value that cannot be turned into a LoRA; the message says which and why."""


def spec_for_entry(entry: LoraEntry, scale: float, catalogue_dir: Path, *, local_file: bool = False) -> LoraSpec:
    """The request-side view of one catalogue entry at one scale."""
    from lorascope.registry.references import references

    refs = references(entry, Path(catalogue_dir))
    path = str(refs.path) if refs.path else None
    sha256 = refs.sha256
    if local_file:
        from lorascope.registry.resolve import resolve

        resolved = resolve(entry, Path(catalogue_dir))
        path, sha256 = str(resolved.path), resolved.sha256
    return LoraSpec(
        id=entry.id,
        scale=float(scale),
        url=refs.url,
        repo=refs.repo,
        file=refs.file,
        revision=refs.revision,
        path=path,
        sha256=sha256,
    )


def _split_scale(text: str) -> tuple[str, float | None]:
    ref, sep, tail = text.rpartition(":")
    if sep and ref:
        try:
            return ref, float(tail)
        except ValueError:
            pass
    return text, None


def looks_like_file(ref: str) -> bool:
    lower = ref.lower()
    return lower.endswith(".safetensors") or lower.endswith(PICKLE_SUFFIXES) or "/" in ref or "\\" in ref


def spec_for_file(path_text: str, scale: float) -> LoraSpec:
    """A local `.safetensors` file: header checked, content hashed; pickle refused."""
    from lorascope.registry.digest import sha256_file
    from lorascope.registry.safetensors_header import NotSafetensorsError, read_header

    path = Path(path_text).expanduser()
    if path.name.lower().endswith(PICKLE_SUFFIXES):
        raise LoraOptionError(
            f"--lora {path_text}: {path.name!r} is a pickle weight file; pickle executes code when loaded, "
            "only .safetensors files are accepted"
        )
    if not path.name.lower().endswith(".safetensors"):
        raise LoraOptionError(f"--lora {path_text}: not a .safetensors file")
    if not path.is_file():
        raise LoraOptionError(f"--lora {path_text}: file {path} does not exist")
    try:
        read_header(path)
    except NotSafetensorsError as exc:
        raise LoraOptionError(f"--lora {path_text}: {exc}") from None
    resolved = path.resolve()
    return LoraSpec(scale=scale, path=str(resolved), file=resolved.name, sha256=sha256_file(resolved))


def parse_lora_option(text: str, catalogue: "Catalogue | None", *, local_file: bool = False) -> LoraSpec:
    """`ID`, `ID:SCALE`, `PATH` or `PATH:SCALE` -> a spec. The default scale is the entry's
    recommended one, or 1.0 for a bare file."""
    text = text.strip()
    if not text:
        raise LoraOptionError("--lora needs a catalogue id or a .safetensors path")
    ref, scale = _split_scale(text)
    if scale is not None and not math.isfinite(scale):
        raise LoraOptionError(f"--lora {text}: scale {text.rpartition(':')[2]!r} is not a finite number (e.g. {ref}:0.8)")
    if looks_like_file(ref):
        return spec_for_file(ref, 1.0 if scale is None else scale)
    if catalogue is None:
        raise LoraOptionError(f"--lora {text}: no catalogue loaded to look up {ref!r}")
    try:
        entry = catalogue.get(ref)
    except KeyError as exc:
        head, sep, tail = text.partition(":")
        if sep and head in catalogue.ids:  # `id:abc`: the id is fine, the scale is not
            raise LoraOptionError(f"--lora {text}: scale {tail!r} is not a number (e.g. {head}:0.8)") from None
        raise LoraOptionError(f"--lora {text}: {exc}") from None
    return spec_for_entry(
        entry, entry.scale.recommended if scale is None else scale, catalogue.dir, local_file=local_file
    )
