"""Suite files: the YAML that says which grid to run.

Loaded with ruamel.yaml's round-trip loader so every problem can name the file, the line and
the field; all problems are collected and raised together (`SuiteError`), never one per try.
The provider entries stay raw here: which keys are provider config and which are request
options is decided in `lorascope.harness.grid`, where the provider classes are known.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

SIZE = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")
PROMPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_STACK = 3
#: LoRA scales a suite may ask for (0 = loaded at weight 0); providers may allow less.
SCALE_RANGE = (0.0, 4.0)


def _out_of_range(scales: list[float]) -> list[float]:
    return [s for s in scales if not SCALE_RANGE[0] <= s <= SCALE_RANGE[1]]


class SuiteError(ValueError):
    """Every problem found in a suite, each already prefixed with `file:line: field:`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class PromptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    text: str

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not PROMPT_ID.match(v):
            raise ValueError(f"{v!r} is not a prompt id (letters, digits, '_', '.', '-')")
        return v

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt text is empty")
        return v


class ProviderSpec(BaseModel):
    """One `providers:` entry: a name and its raw settings (config keys and options mixed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    settings: dict[str, Any] = Field(default_factory=dict)


class StackSpec(BaseModel):
    """LoRAs applied together, each at its own scale, in the order written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    loras: tuple[tuple[str, float], ...]

    @model_validator(mode="after")
    def _size(self) -> "StackSpec":
        ids = [i for i, _ in self.loras]
        if not 2 <= len(ids) <= MAX_STACK:
            raise ValueError(f"a stack holds 2 to {MAX_STACK} LoRAs, this one has {len(ids)}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"a stack lists the same LoRA twice: {ids}")
        bad = _out_of_range([s for _, s in self.loras])
        if bad:
            raise ValueError(f"scale(s) {bad} outside [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
        return self


SuiteMode = Literal["txt2img", "img2img", "inpaint", "controlnet"]
#: Strength when a suite gives none (diffusers' and fal's defaults: img2img 0.6, inpaint 1).
DEFAULT_STRENGTH = {"img2img": 0.6, "inpaint": 1.0}


class ImageSpec(BaseModel):
    """One input of an image-conditioned suite: files relative to the suite, or https URLs.
    `image` is the picture to restyle/repaint (ControlNet: the control image unless `control`
    is given), `mask` white where inpainting repaints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    image: str
    mask: str | None = None
    control: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not PROMPT_ID.match(v):
            raise ValueError(f"{v!r} is not an image id (letters, digits, '_', '.', '-')")
        return v


class ControlSpec(BaseModel):
    """ControlNet settings of a `mode: controlnet` suite (fal's and diffusers' names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float | None = Field(default=None, ge=0.0, le=2.0)
    start: float | None = Field(default=None, ge=0.0, le=1.0)
    end: float | None = Field(default=None, ge=0.0, le=1.0)
    preprocess: Literal["none", "canny", "depth", "pose"] | None = None


def _provider_item(item: Any) -> Any:
    if isinstance(item, str):
        return {"name": item}
    if isinstance(item, dict) and len(item) == 1:
        (name, settings), = item.items()
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise ValueError(f"settings of provider {name!r} must be a mapping, got {type(settings).__name__}")
        return {"name": name, "settings": dict(settings)}
    if isinstance(item, dict) and "name" in item:
        return item
    raise ValueError("a provider is a name, or a one-key mapping `name: {settings}`")


def _stack_item(item: Any) -> Any:
    if isinstance(item, dict) and "loras" not in item:
        return {"loras": [(k, v) for k, v in item.items()]}
    if isinstance(item, list):
        pairs = []
        for part in item:
            if isinstance(part, dict) and set(part) == {"id", "scale"}:
                pairs.append((part["id"], part["scale"]))
            elif isinstance(part, dict) and len(part) == 1:
                pairs.extend(part.items())
            else:
                raise ValueError("a stack is a mapping `lora-id: scale` (2 or 3 of them)")
        return {"loras": pairs}
    return item


class Suite(BaseModel):
    """A grid: LoRAs x scales (+ stacks) x prompts x seeds x providers (x option axes),
    plus a no-LoRA baseline for every (prompt, seed, provider, option values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str | None = None
    catalogue: Path | None = None
    providers: list[ProviderSpec] = Field(min_length=1)
    loras: list[str] = Field(default_factory=list)
    #: None: each LoRA at its catalogue `scale.recommended`.
    scales: list[float] | None = None
    stacks: list[StackSpec] = Field(default_factory=list)
    prompts: list[PromptSpec] = Field(min_length=1)
    #: `null` in the list asks for an unseeded (provider-random) generation; never reused.
    seeds: list[int | None] = Field(default_factory=lambda: [42], min_length=1)
    size: str = "1024x1024"
    steps: int = Field(default=8, ge=1, le=100)
    output_format: Literal["png", "jpeg", "webp"] = "png"
    num_images: int = Field(default=1, ge=1, le=4)
    baseline: bool = True
    #: Image-conditioned grids: what the inputs are for, the inputs, and the strength axis.
    mode: SuiteMode = "txt2img"
    images: list[ImageSpec] = Field(default_factory=list)
    #: None: the mode's default strength (img2img 0.6, inpaint 1.0).
    strengths: list[float] | None = None
    controlnet: ControlSpec | None = None

    _path: Path | None = PrivateAttr(default=None)
    _text: str = PrivateAttr(default="")
    _tree: Any = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", v):
            raise ValueError(f"{v!r} is not a suite name (letters, digits, '_', '.', '-'; it names the run folder)")
        return v

    @field_validator("providers", mode="before")
    @classmethod
    def _providers(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            return [_provider_item(item) for item in v]
        return v

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompts(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"id": f"p{i + 1}", "text": p} if isinstance(p, str) else p for i, p in enumerate(v)]
        return v

    @field_validator("stacks", mode="before")
    @classmethod
    def _stacks(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [_stack_item(item) for item in v]
        return v

    @field_validator("strengths")
    @classmethod
    def _strengths(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            bad = [s for s in v if not 0.0 <= s <= 1.0]
            if bad:
                raise ValueError(f"strength(s) {bad} outside [0, 1]")
            if not v:
                raise ValueError("strengths: give at least one value (or leave it out for the mode's default)")
            if len(set(v)) != len(v):
                raise ValueError(f"strengths listed twice: {v}")
        return v

    @field_validator("scales", "seeds", "steps", "num_images", "strengths", mode="before")
    @classmethod
    def _no_booleans(cls, v: Any) -> Any:
        """YAML reads `yes`/`true` as a boolean and pydantic would take it as 1: refuse it."""
        if isinstance(v, bool) or (isinstance(v, list) and any(isinstance(x, bool) for x in v)):
            raise ValueError(f"{v!r}: true/false is not a number")
        return v

    @field_validator("scales")
    @classmethod
    def _scales(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            bad = _out_of_range(v)
            if bad:
                raise ValueError(f"scale(s) {bad} outside [{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
            if len(set(v)) != len(v):
                raise ValueError(f"scales listed twice: {v}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int | None]) -> list[int | None]:
        bad = [s for s in v if s is not None and s < 0]
        if bad:
            raise ValueError(f"seed(s) {bad} are negative")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds listed twice: {v}")
        return v

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        if isinstance(v, bool) or isinstance(v, float):
            raise ValueError(f"{v!r} is not a size like 1024x1024 (whole pixels)")
        if isinstance(v, int):
            v = f"{v}x{v}"
        if isinstance(v, dict) and set(v) == {"width", "height"}:
            # each side through the same check as the WxH form (a decimal or a word is refused)
            v = f"{v['width']}x{v['height']}"
        if isinstance(v, str):
            m = SIZE.match(v)
            if not m:
                raise ValueError(f"{v!r} is not a size like 1024x1024")
            w, h = int(m.group(1)), int(m.group(2))
            if w < 16 or h < 16:
                raise ValueError(f"size {w}x{h} is too small")
            return f"{w}x{h}"
        return v

    @model_validator(mode="after")
    def _cross(self) -> "Suite":
        problems = []
        ids = [p.id for p in self.prompts]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            problems.append(f"prompt ids listed twice: {dup}")
        names = [p.name for p in self.providers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"providers listed twice: {dup}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def mode_problems(self) -> list[tuple[tuple[Any, ...], str]]:
        """(YAML location, message) for every way `mode`, `images`, `strengths` and
        `controlnet` disagree; `parse_suite` turns them into file:line problems."""
        problems: list[tuple[tuple[Any, ...], str]] = []
        ids = [i.id for i in self.images]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            problems.append((("images",), f"image ids listed twice: {dup}"))
        if self.mode == "txt2img":
            for name, given in (("images", bool(self.images)), ("strengths", self.strengths is not None),
                                ("controlnet", self.controlnet is not None)):
                if given:
                    problems.append(((name,), "given but mode is text-to-image (set mode: img2img, inpaint or controlnet)"))
            return problems
        if not self.images:
            mask = ", mask" if self.mode == "inpaint" else ""
            problems.append((("mode",), f"mode {self.mode} needs images: [{{id, image{mask}}}]"))
        for index, item in enumerate(self.images):
            if self.mode == "inpaint" and not item.mask:
                problems.append((("images", index), f"mode inpaint needs a mask for image {item.id!r}"))
            if self.mode != "inpaint" and item.mask:
                problems.append((("images", index, "mask"), f"masks are only used by mode inpaint (mode is {self.mode})"))
            if self.mode != "controlnet" and item.control:
                problems.append((("images", index, "control"),
                                 f"control images are only used by mode controlnet (mode is {self.mode})"))
        if self.mode == "controlnet" and self.strengths is not None:
            problems.append((("strengths",), "strengths are for img2img and inpaint; ControlNet uses controlnet.scale"))
        if self.mode != "controlnet" and self.controlnet is not None:
            problems.append((("controlnet",), f"controlnet settings given but mode is {self.mode}"))
        return problems

    @property
    def strength_axis(self) -> list[float | None]:
        """The strengths each LoRA setting is generated at ([None] outside img2img/inpaint)."""
        if self.mode not in DEFAULT_STRENGTH:
            return [None]
        return list(self.strengths) if self.strengths is not None else [DEFAULT_STRENGTH[self.mode]]

    # ---- derived -------------------------------------------------------------------

    @property
    def width(self) -> int:
        return int(self.size.lower().split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.lower().split("x")[1])

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def text(self) -> str:
        return self._text

    def where(self, *loc: Any) -> str:
        """`file:line` of the deepest part of `loc` present in the YAML (for messages)."""
        return _where(self._path, self._tree, loc)

    def catalogue_path(self) -> Path | None:
        """The catalogue file: relative paths are looked up beside the suite, then in each
        folder above it (a suite in `suites/` finds the project's `loras.yaml`), then in the
        working directory. None lets the registry pick its default."""
        wanted = self.catalogue or Path("loras.yaml")
        if wanted.is_absolute():
            return wanted
        bases: list[Path] = []
        if self._path is not None:
            here = self._path.resolve().parent
            bases += [here, *here.parents]
        bases.append(Path.cwd())
        for base in bases:
            if (base / wanted).is_file():
                return base / wanted
        if self.catalogue is None:
            return None
        return (bases[0] / wanted) if bases else wanted


# ---- loading -----------------------------------------------------------------------


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers -> plain dict/list (ruamel scalars are str/int/float)."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, (int, float)) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _line_of(tree: Any, loc: tuple[Any, ...]) -> int | None:
    node, line = tree, None
    for part in loc:
        try:
            if isinstance(node, dict) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        except (AttributeError, KeyError, IndexError, TypeError):
            break
    if line is None and hasattr(tree, "lc"):
        line = (tree.lc.line or 0) + 1
    return line


def _where(path: Path | None, tree: Any, loc: tuple[Any, ...]) -> str:
    name = str(path) if path is not None else "<suite>"
    line = _line_of(tree, loc) if tree is not None else None
    return f"{name}:{line}" if line else name


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_suite(text: str, path: Path | None = None) -> Suite:
    """Parse suite YAML text; `path` only labels messages and anchors relative paths."""
    from lorascope.registry import safe_yaml

    label = str(path) if path is not None else "<suite>"
    try:  # size, depth and alias expansion are bounded before anything is built
        tree = safe_yaml.load(text)
    except safe_yaml.YamlLimitError as exc:
        line = f":{exc.line}" if exc.line else ""
        message = exc.message.replace("invalid YAML:", "not valid YAML:", 1)
        raise SuiteError([f"{label}{line}: {message}"]) from None
    if not isinstance(tree, dict):
        raise SuiteError([f"{label}:1: a suite is a mapping (name:, providers:, loras:, prompts:, ...)"])
    try:
        suite = Suite.model_validate(_plain(tree))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown field (known: {', '.join(Suite.model_fields)})" if len(loc) == 1 else "unknown field"
            problems.append(f"{_where(path, tree, loc)}: {_field(loc)}: {msg}")
        raise SuiteError(problems) from None
    mode_problems = suite.mode_problems()
    if mode_problems:
        raise SuiteError([f"{_where(path, tree, loc)}: {_field(loc)}: {msg}" for loc, msg in mode_problems])
    suite._path = path
    suite._text = text
    suite._tree = tree
    return suite


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raises `SuiteError` listing every problem."""
    from lorascope.registry import safe_yaml

    path = Path(path)
    try:
        text = safe_yaml.read_text(path)
    except safe_yaml.YamlLimitError as exc:
        raise SuiteError([f"{path}: {exc.message}"]) from None
    except OSError as exc:
        raise SuiteError([f"{path}: cannot read suite file: {exc.strerror or exc}"]) from None
    return parse_suite(text, path)
