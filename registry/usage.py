"""What a non-style LoRA is for, and a warning when a suite uses it otherwise.

Why: a training adapter, a speed (re-turbo) LoRA, a restoration LoRA or a slider swept over
style scales gives a grid that looks like a verdict on the LoRA but measures a misuse. The
harness asks `usage_warnings` for each LoRA of a grid and prints what comes back; nothing is
refused (a person may mean it).
"""

from __future__ import annotations

from collections.abc import Iterable

from lorascope.registry.models import LoraEntry

INTENDED_USE: dict[str, str] = {
    "training-adapter": "training LoRAs on Turbo (ai-toolkit merges it while training and inverts it when sampling); "
                        "at inference it de-distills Turbo, so 8-step images get worse",
    "speed": "restoring few-step sampling on a de-turbo (de-distilled) model; Turbo itself has nothing to restore",
    "restoration": "image-to-image or inpainting on an input image it repairs; a text-to-image grid gives it none",
    "slider": "scales along its own range, often far outside 0..1",
}


def usage_warnings(entry: LoraEntry, scales: Iterable[float], *, image_conditioned: bool = False) -> list[str]:
    """One line per way this grid uses `entry` against its kind's purpose (empty when fine)."""
    scales = sorted({float(s) for s in scales})
    out: list[str] = []
    kind = entry.kind
    if kind in ("training-adapter", "speed") or (kind == "restoration" and not image_conditioned):
        out.append(f"LoRA {entry.id!r} is a {kind} LoRA, meant for {INTENDED_USE[kind]}; "
                   "its text-to-image grid says little about it")
    if kind == "slider" and scales:
        lo, hi = entry.scale.range
        below = [s for s in scales if 0 < s < lo]
        if below and max(scales) < lo:
            out.append(f"LoRA {entry.id!r} is a slider whose useful scales are {lo:g}..{hi:g}; "
                       f"swept over {scales[0]:g}..{scales[-1]:g} it barely moves the image")
    return out
