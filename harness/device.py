"""Which torch device to run on when the user says "auto": CUDA, then Apple's MPS, then CPU.
Shared by the local pipeline and (downstream) the CLIP scorer so both pick the same one."""

from __future__ import annotations


def best_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"
