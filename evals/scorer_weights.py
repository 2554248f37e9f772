"""Reading a scorer's weight file safely: `.safetensors`, or a plain state-dict `.pth`/`.pt`
through `torch.load(weights_only=True)`, which refuses anything but tensors and containers
(a full unpickle runs whatever code the file carries). The file's sha256 names the weights in
the scorer's model id, remembered by (path, size, mtime) so a 2 GB checkpoint is hashed once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorascope.evals.embedding_cache import EmbeddingCache
from lorascope.evals.scorer import ScorerUnavailable

if TYPE_CHECKING:  # pragma: no cover
    import torch

TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def weights_sha256(path: Path, env: str, cache: EmbeddingCache | None, fix: str) -> str:
    """The file's content hash; ScorerUnavailable (with `fix`) when it is not there."""
    if not path.is_file():
        raise ScorerUnavailable(f"{env}={path}: no such file. {fix}")
    suffix = path.suffix.lower()
    if suffix != ".safetensors" and suffix not in TORCH_SUFFIXES:
        raise ScorerUnavailable(f"{env}={path}: expected a .safetensors or a state-dict .pth/.pt file")
    return cache.checkpoint_sha256(path) if cache else _sha(path)


def _sha(path: Path) -> str:
    from lorascope.registry.digest import sha256_file

    return sha256_file(path)


def load_state_dict(path: Path, env: str) -> dict[str, "torch.Tensor"]:
    """Tensors by key; a pickle that `weights_only` rejects is refused in one line."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    import pickle

    import torch

    try:
        obj: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScorerUnavailable(
            f"{env}={path}: refused: not a plain state dict (torch.load weights_only=True rejected it: {first[:160]})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # training checkpoints (HPS) wrap the weights
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ScorerUnavailable(f"{env}={path}: refused: expected a mapping of tensor names to tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}
