"""The local provider's ControlNet weights: checked, loaded, and named for the fingerprint.

Why its own part: the weights users actually have are alibaba-pai's single-file releases
(Z-Image-Turbo-Fun-Controlnet-Union[-2.0/2.1].safetensors, the keys of diffusers'
`ZImageControlNetModel` without a config). `from_single_file` infers the version from the
keys and fetches the matching config.json from a hub repo (hlky/Z-Image-Turbo-Fun-Controlnet-
Union[-2.0/-2.1]), which fails offline with a message about that repo, and a file of other
keys fails deep inside the loader ("Cannot copy out of meta tensor"). Here the file's header
is read first (no weights), the config is found (the `controlnet_config` setting: a folder
holding config.json or a repo id; else the repo diffusers infers, from the network or the
local hub cache), the file's keys and shapes are compared with that config, and every
failure is one line that says what to do. torch/diffusers are imported inside functions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lorascope.registry.models import PICKLE_SUFFIXES

#: Keys every Z-Image ControlNet file has (diffusers' and alibaba-pai's names are the same).
MARKERS = ("control_all_x_embedder.", "control_layers.")
#: The v1 release's config repo, for messages when diffusers' inference cannot run.
DEFAULT_CONFIG_REPO = "hlky/Z-Image-Turbo-Fun-Controlnet-Union"


class ControlNetWeightsError(ValueError):
    """One line: what is wrong with the ControlNet weights and what to do."""


def weights_problem(name: str) -> str | None:
    """Why the `controlnet` setting cannot name weights, known without reading them: a pickle
    file, or a .safetensors path that is not there (a hub repo id never ends in a suffix)."""
    path = Path(name).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return (f"{name}: pickle weight files execute code when loaded; only .safetensors is accepted "
                "(convert it where you trust it, or download the .safetensors release)")
    if path.suffix.lower() == ".safetensors" and not path.is_file():
        return f"{name}: file does not exist"
    return None


_SHA_CACHE: dict[tuple[str, int, int, int], str] = {}


def file_identity(path: Path) -> str:
    """The file's content hash (first 16 hex of sha256): a different file under the same name,
    size or mtime (a copy that kept its timestamp) is a different ControlNet. Hashed once per
    file version per process (a few seconds for the 3-6 GB releases, next to their load)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _SHA_CACHE:
        with open(path, "rb") as fh:
            _SHA_CACHE[key] = hashlib.file_digest(fh, "sha256").hexdigest()
    return f"sha256-{_SHA_CACHE[key][:16]}"


def header(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from the safetensors header alone (no weights read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            return {key: list(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except Exception as exc:  # SafetensorError, OSError: not a safetensors file
        raise ControlNetWeightsError(f"{path} is not a readable .safetensors file ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:160]})") from None


def check_layout(path: Path, shapes: dict[str, list[int]]) -> None:
    """A Z-Image ControlNet's keys, or one line naming what the file looks like instead."""
    if all(any(key.startswith(marker) for key in shapes) for marker in MARKERS):
        return
    sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
    hint = " (a LoRA: pass it with --lora / loras:, not as controlnet)" if any(".lora_" in k for k in shapes) else ""
    raise ControlNetWeightsError(
        f"{path} is not a Z-Image ControlNet: it has no {' / '.join(m + '*' for m in MARKERS)} weights "
        f"(found {sample}){hint}; use alibaba-pai's Z-Image-Turbo-Fun-Controlnet-Union .safetensors")


def inferred_config_repo(path: Path, shapes: dict[str, list[int]]) -> str:
    """The hub repo diffusers' `from_single_file` takes the config from, by its own rule
    (single_file_utils.infer_diffusers_model_type), fed the header's keys; only the tensor
    that rule reads (2.0 vs 2.1) is loaded."""
    try:
        from diffusers.loaders.single_file_utils import fetch_diffusers_config
        from safetensors import safe_open

        probe = "control_noise_refiner.0.before_proj.weight"
        checkpoint: dict[str, Any] = dict.fromkeys(shapes)
        if probe in shapes:
            with safe_open(str(path), framework="pt") as fh:
                checkpoint[probe] = fh.get_tensor(probe)
        return str(fetch_diffusers_config(checkpoint)["pretrained_model_name_or_path"])
    except Exception:
        return DEFAULT_CONFIG_REPO


def load_config(path: Path, shapes: dict[str, list[int]], source: str | None, local_files_only: bool) -> tuple[dict, str]:
    """The ControlNet's config and where it came from: `source` (a folder with config.json or
    a repo id), else the repo diffusers infers, from the hub or the local hub cache."""
    from diffusers import ZImageControlNetModel

    given = source is not None
    if source is None:
        source = inferred_config_repo(path, shapes)
    elif Path(source).expanduser().is_dir():
        source = str(Path(source).expanduser())
    try:
        return dict(ZImageControlNetModel.load_config(source, local_files_only=local_files_only)), source
    except Exception as exc:  # OSError / EnvironmentError / hub errors
        reason = " ".join(str(exc).split())[:160]
        if given:
            raise ControlNetWeightsError(
                f"controlnet_config {source}: no ZImageControlNetModel config.json there ({reason}); give a folder "
                "holding the config.json of the ControlNet's diffusers repo, or that repo's id") from None
        raise ControlNetWeightsError(
            f"{path.name} is a single-file ControlNet without its config: diffusers takes config.json from hub repo "
            f"{source}, which is not reachable and not in the local hub cache ({reason}). Where the hub is reachable run "
            f"`hf download {source} config.json` once (the hub cache is then read offline), or add `--local-dir DIR` and "
            "set the diffusers setting controlnet_config to DIR") from None


def check_fits(path: Path, shapes: dict[str, list[int]], config: dict, source: str) -> None:
    """The file's weights against the model `config` describes: a missing, unexpected or
    differently shaped tensor means the file and config are different releases (2.0 vs 2.1,
    a lite file), which the loader would otherwise load half-random or fail on obscurely."""
    from accelerate import init_empty_weights
    from diffusers import ZImageControlNetModel
    from diffusers.loaders.single_file_utils import convert_z_image_controlnet_checkpoint_to_diffusers

    with init_empty_weights():
        model = ZImageControlNetModel.from_config(config)
    expected = {key: list(value.shape) for key, value in model.state_dict().items()}
    try:  # what diffusers' own conversion keeps of this file under this config
        kept = set(convert_z_image_controlnet_checkpoint_to_diffusers(dict.fromkeys(shapes), model.config))
    except Exception:
        kept = set(shapes)
    missing = sorted(set(expected) - kept)
    extra = sorted(kept - set(expected))
    wrong = sorted(k for k in set(expected) & kept if expected[k] != shapes[k])
    if not (missing or extra or wrong):
        return
    details = []
    if missing:
        details.append(f"{len(missing)} weight(s) the config needs are missing (e.g. {missing[0]})")
    if extra:
        details.append(f"{len(extra)} weight(s) the config has no place for (e.g. {extra[0]})")
    if wrong:
        details.append(f"{wrong[0]} is {shapes[wrong[0]]}, the config says {expected[wrong[0]]}")
    raise ControlNetWeightsError(
        f"{path.name} does not fit the config from {source}: {'; '.join(details)}; the file and config are different "
        "ControlNet releases: set controlnet_config to the config of this file's release")


def load_single_file(path: Path, source: str | None, local_files_only: bool, dtype_kwarg: dict[str, Any]) -> Any:
    """alibaba-pai's single-file release (or any file in its key layout), checked before the
    weights are read, loaded by diffusers' `from_single_file` with the config found here."""
    from diffusers import ZImageControlNetModel

    if path.suffix.lower() != ".safetensors":
        raise ControlNetWeightsError(f"{path}: not a .safetensors file")
    shapes = header(path)
    check_layout(path, shapes)
    config, found = load_config(path, shapes, source, local_files_only)
    check_fits(path, shapes, config, found)
    return ZImageControlNetModel.from_single_file(str(path), config=found, local_files_only=local_files_only,
                                                  **dtype_kwarg)


def load_pretrained(name: str, revision: str | None, local_files_only: bool, dtype_kwarg: dict[str, Any]) -> Any:
    """A diffusers folder or hub repo (config.json + diffusion_pytorch_model.safetensors);
    `use_safetensors` refuses a folder that only has pickle weights."""
    from diffusers import ZImageControlNetModel

    folder = Path(name).expanduser()
    return ZImageControlNetModel.from_pretrained(str(folder) if folder.is_dir() else name, revision=revision,
                                                 local_files_only=local_files_only, use_safetensors=True,
                                                 **dtype_kwarg)
