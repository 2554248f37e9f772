"""The local provider's LoRA management: every distinct LoRA file loaded once as a named
adapter through diffusers' loader (peft underneath) and kept; a request only activates its
set with `set_adapters(names, adapter_weights=scales)`.

Why: a scale sweep never reloads or fuses (fusing leaves ~1e-6 residue, NOTES.md), so scale
0 and "no LoRA" give the base image bit-exactly and removing adapters restores the base
exactly. With `compile` (or `hotswap`) the transformer keeps fixed adapter slots and new
files are hot-swapped into them (`enable_lora_hotswap` + `hotswap=True`), and scales are
written into peft's scaling tensors in place, so a compiled graph is not rebuilt for every
LoRA set or scale. Files are identified by content (sha256), not by path.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorascope.harness.errors import RejectedRequest
from lorascope.harness.models import LoraSpec
from lorascope.harness.providers.local_pipeline import one_line
from lorascope.registry.digest import FileHashes
from lorascope.registry.safetensors_header import NotSafetensorsError, read_header

if TYPE_CHECKING:
    from lorascope.harness.providers.local import DiffusersConfig


@dataclass
class _Adapter:
    name: str
    path: str
    sha256: str


class Adapters:
    """The adapters loaded into one pipeline (LRU, at most `max_adapters`), and which are
    active at which scales. The caller holds the provider's lock and passes the pipeline."""

    def __init__(self, config: "DiffusersConfig", provider_name: str) -> None:
        self.config = config
        self.provider_name = provider_name
        self.by_sha: OrderedDict[str, _Adapter] = OrderedDict()  # sha256 -> adapter (LRU)
        self.hashes = FileHashes()  # shared with a Ray worker's checks (ray_worker), so a file is hashed once
        self._slots: list[str | None] = []  # hotswap mode: sha256 held by slot i
        self._slot_unit: dict[str, dict[str, float]] = {}  # slot -> layer -> scaling at weight 1
        #: What set_adapters/disable_lora last applied; None when unknown (after a load).
        self._active_state: tuple[Any, ...] | None = None
        self.loads = 0  # files read by the LoRA loader (benchmarks and tests read it)
        self._counter = 0

    @property
    def loaded(self) -> dict[str, str]:
        """Adapter name -> file path, for what is loaded now."""
        return {a.name: a.path for a in self.by_sha.values()}

    def sha_of(self, path: Path) -> str:
        """A file's sha256, hashed once per file version (path, mtime, size)."""
        return self.hashes.sha256(path)

    def name_of(self, spec: LoraSpec) -> str:
        """The adapter name a loaded LoRA runs under (recorded in each result)."""
        return self.by_sha[self.sha_of(Path(spec.path or ""))].name

    def forget(self) -> None:
        """The pipeline was released: nothing is loaded any more."""
        self.by_sha.clear()
        self._slots = []
        self._slot_unit = {}
        self._active_state = None

    def remove(self, pipe: Any, paths: list[str | Path] | None = None) -> None:
        """Unload some adapters (by file) or all; the base model is restored exactly."""
        if pipe is None or not self.by_sha:
            return
        self._active_state = None
        if paths is None or self.config.hotswap_mode:
            pipe.unload_lora_weights()
            self.by_sha.clear()
            self._slots = []
            self._slot_unit = {}
            if self.config.hotswap_mode:  # the next first load must prepare slots again
                pipe.enable_lora_hotswap(target_rank=self.config.hotswap_target_rank, check_compiled="warn")
            return
        shas = {self.sha_of(Path(p)) for p in paths}
        names = [a.name for sha, a in self.by_sha.items() if sha in shas]
        if names:
            with quiet_loader():
                pipe.delete_adapters(names)
        for sha in shas:
            self.by_sha.pop(sha, None)

    def activate(self, pipe: Any, loras: tuple[LoraSpec, ...]) -> float:
        """Make exactly `loras` active at their scales; returns seconds spent loading files."""
        if self.config.hotswap_mode:
            return self._activate_slots(pipe, loras)
        load_s = 0.0
        names: list[str] = []
        shas = [self.sha_of(Path(spec.path or "")) for spec in loras]
        for sha in shas:  # this request's loaded adapters are the last to be evicted
            if sha in self.by_sha:
                self.by_sha.move_to_end(sha)
        for spec, sha in zip(loras, shas):
            path = Path(spec.path or "")
            adapter = self.by_sha.get(sha)
            if adapter is None:
                self._evict_oldest(pipe)
                self._counter += 1
                adapter = _Adapter(f"lora{self._counter}_{sha[:8]}", str(path), sha)
                started = time.perf_counter()
                self._load(pipe, path, adapter_name=adapter.name)
                load_s += time.perf_counter() - started
                self.by_sha[sha] = adapter
            self.by_sha.move_to_end(sha)
            names.append(adapter.name)
        if not self.by_sha:
            return load_s
        state: tuple[Any, ...] = ("on", tuple(names), tuple(float(s.scale) for s in loras)) if names else ("off",)
        if state != self._active_state:  # a repeated request touches nothing
            if names:
                if self._active_state is None or self._active_state[0] != "on":
                    pipe.enable_lora()
                pipe.set_adapters(names, adapter_weights=list(state[2]))
            else:
                pipe.disable_lora()
            self._active_state = state
        return load_s

    def _load(self, pipe: Any, path: Path, *, adapter_name: str, hotswap: bool = False) -> None:
        self.loads += 1
        self._active_state = None  # loading changes which adapters are active
        try:
            source = lora_source(path)
            with quiet_loader():
                pipe.load_lora_weights(source, adapter_name=adapter_name, hotswap=hotswap)
        except Exception as exc:
            if not hotswap:
                _forget_partial_adapter(pipe, adapter_name)
            raise RejectedRequest(self.provider_name, f"LoRA {path}: {lora_failure_reason(exc)}") from None

    def _evict_oldest(self, pipe: Any) -> None:
        """Make room for one more adapter (least recently used first)."""
        while len(self.by_sha) >= self.config.max_adapters:
            sha, adapter = next(iter(self.by_sha.items()))
            self._active_state = None
            with quiet_loader():
                pipe.delete_adapters([adapter.name])
            del self.by_sha[sha]

    def _activate_slots(self, pipe: Any, loras: tuple[LoraSpec, ...]) -> float:
        """Hotswap mode: fixed adapter names slot0..slot2; a new file replaces a slot's
        weights in place so a compiled transformer keeps its graph. Unused slots get weight
        0 (the active-adapter set, and so the traced code path, stays the same)."""
        load_s = 0.0
        for index, spec in enumerate(loras):
            path = Path(spec.path or "")
            sha = self.sha_of(path)
            slot = f"slot{index}"
            if index < len(self._slots) and self._slots[index] == sha:
                continue
            started = time.perf_counter()
            fresh = index >= len(self._slots)
            try:
                self._load(pipe, path, adapter_name=slot, hotswap=not fresh)
            except RejectedRequest:
                if not fresh:  # the slot may hold half-swapped weights: reload it next time
                    self._slots[index] = None
                    self._active_state = None
                raise
            load_s += time.perf_counter() - started
            self._slot_unit[slot] = _unit_scalings(pipe.transformer, slot)
            if fresh:
                self._slots.append(sha)
            else:
                self._slots[index] = sha
            self.by_sha[sha] = _Adapter(slot, str(path), sha)
            # Keep the map one entry per slot.
            for other_sha, adapter in list(self.by_sha.items()):
                if adapter.name == slot and other_sha != sha:
                    del self.by_sha[other_sha]
        if self._slots:
            weights = [float(s.scale) for s in loras] + [0.0] * (len(self._slots) - len(loras))
            state = ("slots", len(self._slots), tuple(weights))
            if state != self._active_state:
                names = [f"slot{i}" for i in range(len(self._slots))]
                activate = self._active_state is None or self._active_state[1] != len(self._slots)
                _set_slot_weights(pipe.transformer, names, weights, self._slot_unit, activate=activate)
                self._active_state = state
        return load_s


def lora_source(path: Path) -> Any:
    """What to hand diffusers' loader: the path, or, for a layout it cannot take as it is
    (ComfyUI-style fused `attention.qkv`), the tensors already in diffusers' layout
    (`lorascope.registry.lora_layouts`). Raises LayoutError with the one-line reason."""
    from lorascope.registry.lora_layouts import needs_conversion, to_diffusers_layout

    header = read_header(path)
    if not needs_conversion(k for k in header if k != "__metadata__"):
        return str(path)
    from safetensors.torch import load_file

    return to_diffusers_layout(load_file(str(path)))


def _forget_partial_adapter(pipe: Any, adapter_name: str) -> None:
    try:
        if adapter_name in pipe.get_list_adapters().get("transformer", []):
            pipe.delete_adapters([adapter_name])
    except Exception:  # nothing was injected: nothing to clean
        pass


def safetensors_header_problem(path: Path) -> str | None:
    """Cheap structural check (the registry's header reader) before handing a file to torch."""
    try:
        header = read_header(path)
    except NotSafetensorsError as exc:
        reason = str(exc)
        return reason if reason.startswith("not a safetensors file") else f"not a safetensors file ({reason})"
    except OSError as exc:
        return f"not a readable safetensors file ({one_line(exc, 120)})"
    if not any(k != "__metadata__" for k in header):
        return "safetensors file holds no tensors"
    return None


def lora_failure_reason(exc: BaseException) -> str:
    """Turn a diffusers/peft loading exception into one line a user can act on."""
    text = one_line(exc, 400)
    name = type(exc).__name__
    if name == "LayoutError":
        return f"unsupported LoRA layout: {text}"
    if "not found in the base model" in text or name == "NoMatchingPeftModuleError":
        match = re.search(r"\{([^}]*)\}", text)
        examples = ""
        if match:
            modules = sorted(m.strip(" '\"") for m in match.group(1).split(","))
            examples = f" (e.g. {', '.join(modules[:2])})"
        return (
            "not a Z-Image LoRA: none of its target modules exist in the Z-Image transformer"
            f"{examples}; it was made for another model family"
        )
    if "size mismatch" in text or "shape" in text.lower():
        match = re.search(
            r"size mismatch for (\S+?)\.lora_[AB]\.[^:]*: copying a param with shape "
            r"torch\.Size\((\[[^\]]*\])\) from checkpoint, the shape in current model is "
            r"torch\.Size\((\[[^\]]*\])\)",
            text,
        )
        detail = f" ({match.group(1)}: file has {match.group(2)}, model needs {match.group(3)})" if match else ""
        return (
            "tensor shapes do not match this Z-Image transformer; the LoRA was trained for a "
            f"different model or size{detail}"
        )
    if "Invalid adapter checkpoint" in text:
        return "not a LoRA (keys without lora_A/lora_B or lora_down/lora_up)"
    if "hotswap" in text.lower():
        return f"cannot be hot-swapped into the compiled transformer: {text}"
    return f"could not be loaded ({name}: {text})"


@contextlib.contextmanager
def quiet_loader() -> Iterator[None]:
    """diffusers logs a multi-line error (and peft warns) before raising; the provider
    raises its own one-line error instead, so silence theirs for the load."""
    diffusers_logger = logging.getLogger("diffusers")
    previous = diffusers_logger.level
    diffusers_logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        diffusers_logger.setLevel(previous)


def _unit_scalings(transformer: Any, slot: str) -> dict[str, float]:
    """Each LoRA layer's scaling for `slot` at weight 1 (alpha/rank of the file just loaded
    or hot-swapped in; peft sets exactly that on load)."""
    from peft.tuners.lora.layer import LoraLayer

    return {
        name: float(module.scaling[slot])
        for name, module in transformer.named_modules()
        if isinstance(module, LoraLayer) and slot in module.scaling
    }


def _set_slot_weights(
    transformer: Any,
    names: list[str],
    weights: list[float],
    unit: dict[str, dict[str, float]],
    *,
    activate: bool,
) -> None:
    """Hotswap mode's `set_adapters`: write each slot's scale into its scaling tensor in
    place. peft's `set_scale` would put a Python float there, and a compiled graph
    specialises on float values, so every new scale would recompile; a tensor filled in
    place keeps the graph. `activate` (re)sets the active adapter list (slots added)."""
    import torch
    from peft.tuners.lora.layer import LoraLayer

    for module_name, module in transformer.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if activate:
            module.set_adapter(names)
        for name, weight in zip(names, weights):
            if name not in module.scaling:
                continue
            base = unit[name][module_name]
            current = module.scaling[name]
            if isinstance(current, torch.Tensor):
                current.fill_(weight * base)
            else:
                module.scaling[name] = torch.tensor(weight * base, device=module.lora_A[name].weight.device)
