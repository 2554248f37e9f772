"""Suite -> cells: one cell per generation the grid asks for.

For every provider (and every combination of its option axes), prompt and seed there is a
no-LoRA baseline, then each LoRA at each scale, then each stack. A `providers:` entry's keys
that are fields of the provider's `config_model` configure the provider (concurrency, URL,
timeouts); every other key is a request option, and an option given as a list is an axis of
the grid. Triggers are added per LoRA with the registry's `apply_triggers`; the prompt as
written is kept beside the final one, for scoring.

Image-conditioned suites (`mode: img2img | inpaint | controlnet`) multiply the grid by their
inputs and their strengths: every LoRA setting, the no-LoRA baseline included, at every
strength on every input. A cell's image id and strength are among its `axes` (`image`,
`strength`), which the store and report read like any other axis.

Cells come out grouped by LoRA set (baseline first), then prompt, then seed, so a local GPU
provider can keep one LoRA set loaded while it works through its cells.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from lorascope.harness.models import GenerationRequest, LoraSpec
from lorascope.harness.suite import Suite, SuiteError

ProviderLookup = Callable[[str], type]
#: Axis names an image-conditioned cell carries besides its provider option axes.
IMAGE_AXIS, STRENGTH_AXIS = "image", "strength"

#: Most cells one suite may expand to (32 LoRAs x 10 scales x 10 prompts x 5 seeds x 4
#: providers is 64,000); larger grids are refused before they are built.
MAX_CELLS = 100_000


@dataclass(frozen=True, slots=True)
class Cell:
    """One generation of the grid, with the labels results and reports group by."""

    cell_id: str
    provider: str
    prompt_id: str
    prompt: str  # as written in the suite: what scoring compares against
    seed: int | None
    loras: tuple[tuple[str, float], ...]  # (catalogue id, scale) in applied order; () = baseline
    axes: tuple[tuple[str, Any], ...]  # option-axis values of this cell
    request: GenerationRequest

    @property
    def lora(self) -> str:
        """'' for the baseline, the id for one LoRA, '+'-joined ids for a stack."""
        return "+".join(i for i, _ in self.loras)

    @property
    def scales(self) -> str:
        """'' for the baseline, '0.8' for one LoRA, '0.6+0.4' for a stack."""
        return "+".join(f"{s:g}" for _, s in self.loras)

    @property
    def scale(self) -> float | None:
        """The (first) LoRA's scale; None for the baseline."""
        return self.loras[0][1] if self.loras else None

    @property
    def lora_set(self) -> tuple[str, ...]:
        return tuple(i for i, _ in self.loras)

    @property
    def image_id(self) -> str | None:
        """The input image's id (image-conditioned suites), else None."""
        return dict(self.axes).get(IMAGE_AXIS)

    @property
    def strength(self) -> float | None:
        return dict(self.axes).get(STRENGTH_AXIS)


@dataclass
class ProviderSetup:
    """What the suite says about one provider, split into config and request options."""

    name: str
    cls: type
    config: Any  # an instance of cls.config_model
    options: dict[str, Any] = field(default_factory=dict)  # fixed request options
    axes: dict[str, list[Any]] = field(default_factory=dict)  # option name -> values

    def option_combos(self) -> list[tuple[tuple[str, Any], ...]]:
        names = sorted(self.axes)
        return [tuple(zip(names, values)) for values in itertools.product(*(self.axes[n] for n in names))]


@dataclass
class Grid:
    suite: Suite
    cells: list[Cell]
    providers: dict[str, ProviderSetup]
    entries: dict[str, Any]  # catalogue id -> LoraEntry used by the grid
    catalogue_path: Path | None
    #: The catalogue's usage warnings for how this grid uses each LoRA (printed, not refused).
    warnings: list[str] = field(default_factory=list)


def _lookup_default(name: str) -> type:
    from lorascope.harness.providers import provider_class

    return provider_class(name)


def setup_providers(
    suite: Suite,
    only: list[str] | None = None,
    lookup: ProviderLookup | None = None,
    concurrency: int | None = None,
) -> tuple[dict[str, ProviderSetup], list[str]]:
    """Resolve each `providers:` entry to its class, config and options; all problems."""
    lookup = lookup or _lookup_default
    problems: list[str] = []
    setups: dict[str, ProviderSetup] = {}
    names = [p.name for p in suite.providers]
    if only:
        for name in only:
            if name not in names:
                problems.append(f"--providers names {name!r}, which the suite does not list (it lists: {', '.join(names)})")
    for index, spec in enumerate(suite.providers):
        if only and spec.name not in only:
            continue
        loc = ("providers", index, spec.name)
        try:
            cls = lookup(spec.name)
        except (KeyError, ImportError, AttributeError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            problems.append(f"{suite.where('providers', index)}: providers[{index}]: {msg}")
            continue
        config_fields = set(cls.config_model.model_fields)
        config = {k: v for k, v in spec.settings.items() if k in config_fields}
        if concurrency is not None:
            config["concurrency"] = concurrency
        options = {k: v for k, v in spec.settings.items() if k not in config_fields}
        known = getattr(cls, "known_options", frozenset())
        if known:
            for key in sorted(set(options) - set(known)):
                problems.append(
                    f"{suite.where(*loc, key)}: providers[{index}].{spec.name}.{key}: unknown option or setting "
                    f"(config: {', '.join(sorted(config_fields))}; options: {', '.join(sorted(known))})"
                )
        try:  # paths in settings are read from the suite's folder when they name something there
            base_dir = suite.path.resolve().parent if suite.path is not None else None
            config_obj = cls.config_model.model_validate(config, context={"base_dir": base_dir})
        except ValidationError as exc:
            for err in exc.errors():
                key = err["loc"][0] if err["loc"] else ""
                problems.append(
                    f"{suite.where(*loc, key)}: providers[{index}].{spec.name}.{key}: {err['msg'].removeprefix('Value error, ')}"
                )
            continue
        axes = {k: list(v) for k, v in options.items() if isinstance(v, list)}
        for key, values in axes.items():
            if not values:
                problems.append(f"{suite.where(*loc, key)}: providers[{index}].{spec.name}.{key}: an option axis needs at least one value")
            elif len({repr(v) for v in values}) != len(values):
                problems.append(f"{suite.where(*loc, key)}: providers[{index}].{spec.name}.{key}: values listed twice: {values}")
        fixed = {k: v for k, v in options.items() if k not in axes}
        setups[spec.name] = ProviderSetup(spec.name, cls, config_obj, fixed, axes)
    return setups, problems


def _apply_triggers(prompt: str, entries: list[Any]) -> str:
    from lorascope.registry.prompts import apply_triggers

    return apply_triggers(prompt, entries)


def _spec_for_entry(entry: Any, scale: float, catalogue_dir: Path, local_file: bool) -> LoraSpec:
    from lorascope.harness.lora_specs import spec_for_entry

    return spec_for_entry(entry, scale, catalogue_dir, local_file=local_file)


def load_grid_catalogue(suite: Suite) -> tuple[Any, list[str]]:
    """The suite's catalogue, or the problems loading it (one line each)."""
    from lorascope.registry.catalogue import load_catalogue
    from lorascope.registry.problems import CatalogueError

    path = suite.catalogue_path()
    if path is not None and not path.is_file():  # the suite's mistake: name the suite's line
        return None, [f"{suite.where('catalogue')}: catalogue: {path} not found (looked beside the suite, in the "
                      "folders above it and in the working directory)"]
    try:
        return load_catalogue(path), []
    except CatalogueError as exc:
        return None, [str(p) for p in getattr(exc, "problems", [exc])]
    except OSError as exc:
        return None, [f"{suite.where('catalogue')}: catalogue: cannot read {path}: {exc.strerror or exc}"]


def expand(
    suite: Suite,
    *,
    providers: list[str] | None = None,
    lookup: ProviderLookup | None = None,
    concurrency: int | None = None,
    catalogue: Any = None,
    max_cells: int | None = None,
) -> Grid:
    """Every cell of the suite's grid; raises SuiteError with all problems found, and refuses
    a grid over `max_cells` (default `MAX_CELLS`) before building any of it."""
    problems: list[str] = []
    setups, provider_problems = setup_providers(suite, providers, lookup, concurrency)
    problems += provider_problems
    if catalogue is None and (suite.loras or suite.stacks):
        catalogue, cat_problems = load_grid_catalogue(suite)
        problems += cat_problems

    entries: dict[str, Any] = {}
    lora_ids: list[str] = []
    if catalogue is not None:
        for index, selector in enumerate(suite.loras):
            try:
                chosen = catalogue.select([selector])
            except KeyError as exc:
                problems.append(f"{suite.where('loras', index)}: loras[{index}]: {exc}")
                continue
            for entry in chosen:
                entries[entry.id] = entry
                if entry.id not in lora_ids:
                    lora_ids.append(entry.id)
        for s_index, stack in enumerate(suite.stacks):
            for lora_id, _ in stack.loras:
                try:
                    entries[lora_id] = catalogue.get(lora_id)
                except KeyError as exc:
                    problems.append(f"{suite.where('stacks', s_index, lora_id)}: stacks[{s_index}].{lora_id}: {exc}")
        if suite.loras and not lora_ids and not any("loras[" in p for p in problems):
            problems.append(f"{suite.where('loras')}: loras: selects no catalogue entry")
    inputs: list[Any] = []
    if suite.mode != "txt2img":
        from lorascope.harness.input_images import load_inputs

        inputs, input_problems = load_inputs(suite)
        problems += input_problems
        problems += _mode_support_problems(suite, setups, inputs)
    if not suite.baseline and not suite.loras and not suite.stacks:
        problems.append(f"{suite.where('baseline')}: baseline: false with no loras or stacks leaves an empty grid")
    if problems:
        raise SuiteError(problems)

    combos: list[tuple[tuple[str, float], ...]] = []
    if suite.baseline:
        combos.append(())
    for lora_id in lora_ids:
        scales = suite.scales if suite.scales is not None else [entries[lora_id].scale.recommended]
        combos += [((lora_id, float(s)),) for s in scales]
    combos += [tuple((i, float(s)) for i, s in stack.loras) for stack in suite.stacks]

    warnings = _usage_warnings(suite, entries, combos)
    strengths = suite.strength_axis
    # (input axes, init, mask, control, strength): one text-to-image variant when no inputs
    conditionings: list[tuple[tuple[tuple[str, Any], ...], dict[str, Any]]] = [((), {})]
    if inputs:
        conditionings = [
            (((IMAGE_AXIS, item.id),) + (((STRENGTH_AXIS, s),) if s is not None else ()),
             _conditioning(suite, item, s))
            for s in strengths for item in inputs
        ]

    cap_problem = grid_size_problem(suite, setups, len(combos), max_cells, inputs=len(conditionings))
    if cap_problem:
        raise SuiteError([cap_problem])

    catalogue_dir = catalogue.dir if catalogue is not None else Path.cwd()
    # Resolving an entry may download it and hashes the whole file (local providers): once
    # per entry, whatever the number of scales, stacks and option values it appears in.
    resolved: dict[tuple[str, bool], LoraSpec | None] = {}
    prompt_cache: dict[tuple[str, tuple[str, ...]], str] = {}

    def specs_for(combo: tuple[tuple[str, float], ...], local_file: bool) -> list[LoraSpec] | None:
        """The combo's LoRA specs, or None when an entry could not be resolved (noted once)."""
        specs = []
        for lora_id, scale in combo:
            key = (lora_id, local_file)
            if key not in resolved:
                try:
                    resolved[key] = _spec_for_entry(entries[lora_id], 1.0, catalogue_dir, local_file)
                except Exception as exc:  # download, sha256 check, missing file
                    resolved[key] = None
                    needed = " (needed as a local file)" if local_file else ""
                    problems.append(f"{suite.where('loras')}: LoRA {lora_id!r}{needed}: {exc}")
            spec = resolved[key]
            if spec is not None:
                specs.append(spec.model_copy(update={"scale": float(scale)}))
        return specs if len(specs) == len(combo) else None

    def final_prompt(text: str, ids: tuple[str, ...]) -> str:
        if (text, ids) not in prompt_cache:
            prompt_cache[(text, ids)] = _apply_triggers(text, [entries[i] for i in ids]) if ids else text
        return prompt_cache[(text, ids)]

    cells: list[Cell] = []
    for setup in setups.values():
        local_file = bool(getattr(setup.cls, "needs_local_files", False))
        for axes in setup.option_combos():
            options = {**setup.options, **dict(axes)}
            for combo in combos:
                specs = specs_for(combo, local_file)
                if specs is None:
                    continue
                ids = tuple(i for i, _ in combo)
                for (inputs_axes, conditioning), prompt, seed in itertools.product(
                        conditionings, suite.prompts, suite.seeds):
                    request = GenerationRequest(
                        prompt=final_prompt(prompt.text, ids),
                        width=suite.width,
                        height=suite.height,
                        seed=seed,
                        steps=suite.steps,
                        loras=tuple(specs),
                        num_images=suite.num_images,
                        output_format=suite.output_format,
                        options=options,
                        **conditioning,
                    )
                    cell_axes = axes + inputs_axes
                    cells.append(
                        Cell(
                            cell_id=_cell_id(setup.name, cell_axes, prompt.id, seed, combo),
                            provider=setup.name,
                            prompt_id=prompt.id,
                            prompt=prompt.text,
                            seed=seed,
                            loras=combo,
                            axes=cell_axes,
                            request=request,
                        )
                    )
    if problems:
        raise SuiteError(problems)
    return Grid(suite, cells, setups, entries, getattr(catalogue, "path", None), warnings)


def _conditioning(suite: Suite, item: Any, strength: float | None) -> dict[str, Any]:
    """The request fields one input (at one strength) gives every cell that uses it."""
    if suite.mode == "controlnet":
        control = suite.controlnet
        fields = {"control_image": item.control}
        if control is not None:
            fields |= {"control_scale": control.scale, "control_start": control.start,
                       "control_end": control.end, "preprocess": control.preprocess}
        return fields
    return {"init_image": item.init, "mask_image": item.mask, "strength": strength}


def _mode_support_problems(suite: Suite, setups: dict[str, ProviderSetup], inputs: list[Any]) -> list[str]:
    """A provider that does not serve the suite's mode, or cannot take an input in its form
    (a local file for a URL-only provider), named at the suite's lines."""
    from lorascope.harness.modes import input_problem, modes_of

    problems = []
    for index, spec in enumerate(suite.providers):
        setup = setups.get(spec.name)
        if setup is None:
            continue
        if suite.mode not in modes_of(setup.cls):
            served = ", ".join(sorted(modes_of(setup.cls)))
            problems.append(f"{suite.where('providers', index)}: providers[{index}]: {spec.name} does not serve "
                            f"mode {suite.mode} (it serves: {served})")
            continue
        for i_index, item in enumerate(inputs):
            control_key = "control" if suite.images[i_index].control else "image"
            for key, image in (("image", item.init), ("mask", item.mask), (control_key, item.control)):
                if image is None:
                    continue
                problem = input_problem(setup.cls, image)
                if problem:
                    problems.append(f"{suite.where('images', i_index, key)}: images[{i_index}].{key}: {problem}")
    return problems


def _usage_warnings(suite: Suite, entries: dict[str, Any], combos: list[tuple[tuple[str, float], ...]]) -> list[str]:
    """The registry's usage warnings, one pass per LoRA over every scale the grid gives it."""
    from lorascope.registry.usage import usage_warnings

    scales: dict[str, list[float]] = {}
    for combo in combos:
        for lora_id, scale in combo:
            scales.setdefault(lora_id, []).append(scale)
    out: list[str] = []
    for lora_id, values in scales.items():
        out += usage_warnings(entries[lora_id], values, image_conditioned=suite.mode != "txt2img")
    return out


def grid_size_problem(suite: Suite, setups: dict[str, ProviderSetup], n_lora_settings: int,
                      max_cells: int | None = None, inputs: int = 1) -> str | None:
    """Why the grid is too large to build, counted from the axes' lengths (nothing expanded):
    a typo like `seeds: [0..40000000]` must not fill memory before the dry run can say so.
    `inputs`: (input image, strength) pairs of an image-conditioned suite."""
    limit = MAX_CELLS if max_cells is None else max_cells
    variants = sum(math.prod(len(v) for v in setup.axes.values()) for setup in setups.values())
    total = variants * n_lora_settings * inputs * len(suite.prompts) * len(suite.seeds)
    if total <= limit:
        return None
    conditioned = f" x {inputs:,} input/strength pair(s)" if inputs != 1 else ""
    return (f"{suite.where()}: the grid has {total:,} cells ({variants:,} provider/option variant(s) x "
            f"{n_lora_settings:,} LoRA setting(s){conditioned} x {len(suite.prompts):,} prompt(s) x "
            f"{len(suite.seeds):,} seed(s)); the limit is {limit:,}: split the suite or trim its scales, seeds or prompts")


def _cell_id(provider: str, axes: tuple[tuple[str, Any], ...], prompt_id: str, seed: int | None,
             combo: tuple[tuple[str, float], ...]) -> str:
    """Readable and unique within a suite: provider[axes]/prompt/seed/lora@scale."""
    axis = ",".join(f"{k}={v}" for k, v in axes)
    lora = "+".join(f"{i}@{s:g}" for i, s in combo) or "baseline"
    return f"{provider}{'[' + axis + ']' if axis else ''}/{prompt_id}/s{'random' if seed is None else seed}/{lora}"
