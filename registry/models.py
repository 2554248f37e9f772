"""The catalogue's typed model: one `LoraEntry` per LoRA in `loras.yaml`.

Everything downstream receives these objects, never raw dicts. Validation that needs the
file's line numbers (duplicate ids, unknown keys) lives in `lorascope.registry.catalogue`; the rules
that a single entry can check on itself live here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$|^[a-z0-9]$")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
REVISION = re.compile(r"^[0-9a-f]{40}$|^[A-Za-z0-9._/-]+$")

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
SCALE_MIN, SCALE_MAX = 0.0, 4.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _refuse_pickle(name: str) -> str:
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise ValueError(
            f"{name!r} is a pickle weight file; pickle executes code when loaded, "
            "only .safetensors files are accepted"
        )
    return name


def _check_sha256(v: str) -> str:
    if not SHA256.match(v):
        raise ValueError(f"{v!r} is not a sha256 (64 lowercase hex digits)")
    return v


class HubSource(_Strict):
    """A file in a Hugging Face repo, optionally pinned to a revision (commit sha or tag)."""

    type: Literal["hub"] = "hub"
    repo: str
    file: str | None = None  # None: not known yet (schema 2 only); `registry verify --write` fills it
    revision: str | None = None
    sha256: str | None = None  # optional pin of the file's content, verified after download

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not REPO_ID.match(v):
            raise ValueError(f"{v!r} is not a Hugging Face repo id of the form owner/name")
        return v

    @field_validator("file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        return None if v is None else _refuse_pickle(v)

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str | None) -> str | None:
        if v is not None and not REVISION.match(v):
            raise ValueError(f"{v!r} is not a git revision (commit sha, branch or tag)")
        return v

    @field_validator("sha256")
    @classmethod
    def _hub_sha(cls, v: str | None) -> str | None:
        return None if v is None else _check_sha256(v)


class UrlSource(_Strict):
    """A file at an https URL, pinned by its sha256."""

    type: Literal["url"] = "url"
    url: str
    sha256: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        _refuse_pickle(v.split("?", 1)[0])
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        return _check_sha256(v)


class PathSource(_Strict):
    """A file on this machine (relative paths are relative to the catalogue file)."""

    type: Literal["path"] = "path"
    path: Path
    sha256: str | None = None  # optional pin, verified when the entry is resolved

    @field_validator("sha256")
    @classmethod
    def _path_sha(cls, v: str | None) -> str | None:
        return None if v is None else _check_sha256(v)

    @field_validator("path")
    @classmethod
    def _path(cls, v: Path) -> Path:
        _refuse_pickle(str(v))
        return v


Source = Annotated[Union[HubSource, UrlSource, PathSource], Field(discriminator="type")]


class ScaleSpec(_Strict):
    recommended: float = Field(ge=SCALE_MIN, le=SCALE_MAX)
    range: tuple[float, float]

    @model_validator(mode="after")
    def _in_range(self) -> "ScaleSpec":
        lo, hi = self.range
        problems = []
        for bound in (lo, hi):
            if not SCALE_MIN <= bound <= SCALE_MAX:
                problems.append(f"range bound {bound} is outside [{SCALE_MIN:g}, {SCALE_MAX:g}]")
        if lo > hi:
            problems.append(f"range [{lo}, {hi}] is reversed")
        elif not lo <= self.recommended <= hi:
            problems.append(f"recommended {self.recommended} is outside its range [{lo}, {hi}]")
        if problems:
            raise ValueError("; ".join(problems))
        return self


FactState = Literal["confirmed", "secondary", "unverified"]
FACT_STATES: tuple[str, ...] = ("confirmed", "secondary", "unverified")
#: Kinds of LoRA. Non-style kinds are meant for particular uses (registry/usage.py warns when a
#: suite uses them otherwise): a training adapter de-distills Turbo, a speed LoRA restores
#: few-step sampling on a de-turbo model, a restoration LoRA works on an input image, a slider's
#: useful scales can lie far from 0..1.
Kind = Literal["style", "character", "concept", "utility", "training-adapter", "speed", "restoration", "slider"]
KINDS: tuple[str, ...] = get_args(Kind)


def _check_url(v: str | None) -> str | None:
    if v is not None and not v.startswith(("https://", "http://")):
        raise ValueError(f"{v!r} is not an http(s) URL")
    return v


class Alternative(_Strict):
    """A value another source gives for the same fact (kept where sources disagree)."""

    value: Any
    source: str
    url: str | None = None
    note: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_url(v)


class Provenance(_Strict):
    """Where one fact came from and how far to trust it.

    `state`: `confirmed` (read from the LoRA's own repo, card or file), `secondary` (a LoRA list
    or a provider page), `unverified` (a guess or lorascope's default). Schema version 1 wrote
    only `confirmed: true|false`; the two are kept consistent so both files read the same."""

    source: str
    state: FactState = "unverified"
    confirmed: bool = False
    url: str | None = None
    note: str | None = None
    alternatives: list[Alternative] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _state_from_confirmed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        state, confirmed = data.get("state"), data.get("confirmed")
        if state is None:
            return {**data, "state": "confirmed" if confirmed is True else "unverified"}
        if confirmed is None and isinstance(state, str):
            return {**data, "confirmed": state == "confirmed"}
        if isinstance(confirmed, bool) and (state == "confirmed") != confirmed:
            raise ValueError(f"state {state!r} contradicts confirmed: {str(confirmed).lower()}")
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_url(v)


FACT_FIELDS = ("name", "source", "kind", "triggers", "scale", "style_prompt", "license", "base_model")


class LoraEntry(_Strict):
    id: str
    name: str
    source: Source
    kind: Kind
    triggers: list[str] = Field(default_factory=list)
    trigger_position: Literal["prefix", "suffix"] = "prefix"
    scale: ScaleSpec
    style_prompt: str | None = None
    license: str | None = None
    base_model: str | None = None  # the repo id the LoRA was trained on, e.g. Tongyi-MAI/Z-Image-Turbo
    tags: list[str] = Field(default_factory=list)
    notes: str | None = None
    provenance: dict[str, Provenance] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.match(v):
            raise ValueError(f"{v!r} is not a slug (lowercase letters, digits and '-')")
        return v

    @field_validator("triggers")
    @classmethod
    def _triggers(cls, v: list[str]) -> list[str]:
        empty = [i for i, t in enumerate(v) if not t.strip()]
        if empty:
            raise ValueError(f"trigger(s) at position {empty} are empty strings")
        return v

    @field_validator("provenance")
    @classmethod
    def _facts(cls, v: dict[str, Provenance]) -> dict[str, Provenance]:
        unknown = sorted(set(v) - set(FACT_FIELDS))
        if unknown:
            raise ValueError(f"provenance for unknown field(s) {unknown}; known: {list(FACT_FIELDS)}")
        return v

    def is_confirmed(self, fact: str) -> bool:
        """A fact counts as confirmed only when its provenance says so."""
        p = self.provenance.get(fact)
        return bool(p and p.confirmed)

    def state(self, fact: str) -> str:
        """confirmed | secondary | unverified; a fact without provenance is unverified."""
        p = self.provenance.get(fact)
        return p.state if p else "unverified"
