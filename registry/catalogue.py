"""Load and validate `loras.yaml`: typed entries out, or every problem at once with its line.

The file is parsed with ruamel.yaml's round-trip loader only to learn where each key sits; each
entry is then validated by the pydantic model in `lorascope.registry.models`, and pydantic's errors are
mapped back to file, line, entry and field. Rules that need the whole file (duplicate ids,
unknown keys with a suggestion, file suffixes, the CLIP-length warning) live here.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lorascope.registry.models import (
    FACT_FIELDS,
    PICKLE_SUFFIXES,
    SCALE_MAX,
    SCALE_MIN,
    HubSource,
    LoraEntry,
    Alternative,
    PathSource,
    Provenance,
    ScaleSpec,
    UrlSource,
)
from lorascope.registry.problems import CatalogueError, Problem
from lorascope.registry.tokens import CLIP_CONTEXT_LENGTH, estimate_clip_tokens

PROJECT_CATALOGUE = Path(__file__).resolve().parent.parent / "loras.yaml"
TOP_LEVEL_KEYS = ("version", "loras")
#: 1: provenance says `confirmed: true|false`. 2: every fact says `state` (confirmed | secondary |
#: unverified) and, unless unverified, the `url` it was read from; a hub file may be unknown.
SCHEMA_VERSIONS = (1, 2)
#: Facts every version-2 entry must give a source for (others: when the entry sets them).
V2_REQUIRED_FACTS = ("source", "kind", "triggers", "scale")
SOURCE_TYPES: dict[str, type[BaseModel]] = {"hub": HubSource, "url": UrlSource, "path": PathSource}
SOURCE_KEY_FOR_TYPE = {"hub": "repo", "url": "url", "path": "path"}


class UnknownEntryError(KeyError):
    """A catalogue lookup that failed; the message lists the closest ids."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def default_catalogue_path() -> Path:
    """$LORASCOPE_CATALOGUE, else ./loras.yaml in the cwd, else the project's own loras.yaml."""
    env = os.environ.get("LORASCOPE_CATALOGUE")
    if env:
        return Path(env)
    here = Path.cwd() / "loras.yaml"
    if here.is_file():
        return here
    return PROJECT_CATALOGUE


@dataclass
class Catalogue:
    path: Path
    entries: list[LoraEntry]
    warnings: list[Problem] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # entry id -> line of its "- id:" item
    version: int = 1

    @property
    def dir(self) -> Path:
        """Relative local paths in entries are relative to this folder."""
        return self.path.resolve().parent

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    @property
    def tags(self) -> list[str]:
        return sorted({t for e in self.entries for t in e.tags})

    def get(self, entry_id: str) -> LoraEntry:
        for entry in self.entries:
            if entry.id == entry_id:
                return entry
        raise UnknownEntryError(_unknown_id_message(entry_id, self.ids, self.path))

    def select(self, selectors: Iterable[str]) -> list[LoraEntry]:
        """Entries named by ids, `tag:NAME` or `all`, in catalogue order, each once."""
        chosen: set[str] = set()
        for selector in selectors:
            selector = selector.strip()
            if selector == "all":
                chosen.update(self.ids)
            elif selector.startswith("tag:"):
                tag = selector[4:]
                hits = [e.id for e in self.entries if tag in e.tags]
                if not hits:
                    close = difflib.get_close_matches(tag, self.tags, n=3)
                    hint = f"; did you mean {', '.join('tag:' + t for t in close)}?" if close else ""
                    raise UnknownEntryError(f"no entry in {self.path} has tag {tag!r}{hint}")
                chosen.update(hits)
            else:
                chosen.add(self.get(selector).id)
        return [e for e in self.entries if e.id in chosen]


def _unknown_id_message(entry_id: str, ids: list[str], path: Path) -> str:
    close = difflib.get_close_matches(entry_id, ids, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"no entry {entry_id!r} in {path}{hint}"


def load_catalogue(path: Path | str | None = None) -> Catalogue:
    """Load a catalogue; raise CatalogueError listing every error (warnings ride on the result)."""
    path = Path(path) if path is not None else default_catalogue_path()
    entries, problems, lines = _check_file_cached(path)
    if any(p.severity == "error" for p in problems):
        raise CatalogueError(problems)
    version = lines.pop(_VERSION_LINE_KEY, 1)
    return Catalogue(path=path, entries=entries, warnings=problems, lines=lines, version=version)


_VERSION_LINE_KEY = "\0version"  # _check_document hands the version to load_catalogue (no id has a NUL)


# ---------------------------------------------------------------------------- validation


def check_catalogue(path: Path, *, cache: bool = True) -> tuple[list[LoraEntry], list[Problem], dict[str, int]]:
    """Validate a catalogue file: (valid entries, all problems, id -> line). `cache`: reuse the
    result for the same bytes (`registry/catalogue_cache.py`); off for one-off temporary files."""
    entries, problems, lines = _check_file_cached(path) if cache else _check_file(path)
    lines.pop(_VERSION_LINE_KEY, None)
    return entries, problems, lines


def _check_file_cached(path: Path) -> tuple[list[LoraEntry], list[Problem], dict[str, int]]:
    from lorascope.registry.catalogue_cache import cached

    return cached(path, _check_file)


def _check_file(path: Path) -> tuple[list[LoraEntry], list[Problem], dict[str, int]]:
    from lorascope.registry import safe_yaml

    if not path.is_file():
        return [], [Problem(path, None, None, None, "catalogue file not found")], {}
    try:  # size, depth and alias expansion are bounded before anything is built
        data = safe_yaml.load_file(path)
    except safe_yaml.YamlLimitError as exc:
        return [], [Problem(path, exc.line, None, None, exc.message)], {}
    except OSError as exc:
        return [], [Problem(path, None, None, None, f"cannot read the catalogue: {exc.strerror or exc}")], {}
    return _check_document(path, data)


def _check_document(path: Path, data: Any) -> tuple[list[LoraEntry], list[Problem], dict[str, int]]:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    problems: list[Problem] = []
    if data is None:  # an empty file (or only comments) is a wrong path more often than a plan
        return [], [Problem(path, 1, None, None, "the file is empty: a catalogue is a mapping with a 'loras:' list")], {}
    if not isinstance(data, dict):
        return [], [Problem(path, 1, None, None, "the catalogue must be a mapping with a 'loras:' list")], {}
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.append(Problem(path, _key_line(data, key), None, None, _unknown_key_msg(key, TOP_LEVEL_KEYS)))
    version = data.get("version", 1)
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        problems.append(Problem(path, _key_line(data, "version"), None, "version",
                                f"unknown schema version {version!r}; this lorascope reads versions "
                                + ", ".join(map(str, SCHEMA_VERSIONS))))
        version = max(SCHEMA_VERSIONS)
    items = data.get("loras")
    if items is None:
        if "loras" not in data:
            problems.append(Problem(path, 1, None, "loras", "missing: a catalogue lists its entries under 'loras:'"))
        items = CommentedSeq()
    if not isinstance(items, list):
        line = _key_line(data, "loras")
        return [], [*problems, Problem(path, line, None, "loras", "must be a list of entries")], {}

    entries: list[LoraEntry] = []
    lines: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(items):
        line = _item_line(items, index)
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        label = raw_id if isinstance(raw_id, str) and raw_id else f"#{index + 1}"
        if not isinstance(raw, dict):
            problems.append(Problem(path, line, label, None, "an entry must be a mapping of fields"))
            continue
        if isinstance(raw_id, str):
            if raw_id in first_seen:
                problems.append(
                    Problem(path, _key_line(raw, "id", line), label, "id",
                            f"duplicate id {raw_id!r} (first defined at line {first_seen[raw_id]})")
                )
            else:
                first_seen[raw_id] = line
        entry_problems = _check_entry_raw(path, raw, label, line)
        if version >= 2:
            entry_problems += _check_entry_v2(path, raw, label, line)
        elif isinstance(raw.get("source"), dict) and "repo" in raw["source"] and "file" not in raw["source"]:
            entry_problems.append(Problem(path, _key_line(raw, "source", line), label, "source.file",
                                          "required field is missing (version 2 catalogues may leave it unknown)"))
        entry, model_problems = _validate_entry(path, raw, label, line)
        problems.extend(entry_problems)
        problems.extend(model_problems)
        if entry is not None and not any(p.severity == "error" for p in entry_problems):
            entries.append(entry)
            lines.setdefault(entry.id, line)
    problems.sort(key=lambda p: p.line or 0)  # stable: file order, then the order rules ran
    lines[_VERSION_LINE_KEY] = version
    return entries, problems, lines


def _check_entry_v2(path: Path, raw: dict, label: str, line: int) -> list[Problem]:
    """Version 2: each fact says its state, a confirmed or secondary fact its URL, and the
    facts an entry sets all have a source; an unknown hub file is a warning."""
    problems: list[Problem] = []
    provenance = raw.get("provenance")
    provenance = provenance if isinstance(provenance, dict) else {}
    prov_line = _key_line(raw, "provenance", line) or line
    for fact, record in provenance.items():
        if not isinstance(record, dict):
            continue
        where = _key_line(provenance, fact, prov_line)
        if "confirmed" in record:
            problems.append(Problem(path, where, label, f"provenance.{fact}.confirmed",
                                    "version 2 says `state: confirmed|secondary|unverified` instead of `confirmed`"))
        if "state" not in record:
            problems.append(Problem(path, where, label, f"provenance.{fact}.state", "required field is missing"))
        elif record.get("state") in ("confirmed", "secondary") and not record.get("url"):
            problems.append(Problem(path, where, label, f"provenance.{fact}.url",
                                    f"a {record.get('state')} fact needs the URL it was read from"))
    wanted = list(V2_REQUIRED_FACTS) + [f for f in ("license", "base_model", "style_prompt") if raw.get(f)]
    missing = [f for f in wanted if f not in provenance]
    if missing:
        problems.append(Problem(path, prov_line, label, "provenance",
                                "no source given for: " + ", ".join(missing)))
    source = raw.get("source")
    if isinstance(source, dict) and "repo" in source and not source.get("file"):
        problems.append(Problem(path, _key_line(raw, "source", line), label, "source.file",
                                "file not known yet: providers cannot use this entry until "
                                "`lorascope registry verify ID --write` fills it from the repo", severity="warning"))
    return problems


def _check_entry_raw(path: Path, raw: dict, label: str, line: int) -> list[Problem]:
    """Rules pydantic does not see: file suffixes and the CLIP-length warning."""
    problems: list[Problem] = []
    source = raw.get("source")
    if isinstance(source, dict):
        for key in ("file", "path"):
            value = source.get(key)
            if isinstance(value, str) and not value.lower().endswith(PICKLE_SUFFIXES):
                if not value.lower().endswith(".safetensors"):
                    problems.append(
                        Problem(path, _key_line(source, key, line), label, f"source.{key}",
                                f"{value!r} is not a .safetensors file; only safetensors weights are accepted")
                    )
        local = source.get("path")
        if isinstance(local, str) and local and not _inside(path.resolve().parent, local):
            # a catalogue is shared: it should not quietly read (and hash, and upload) files
            # from elsewhere on the disk of whoever runs it
            problems.append(
                Problem(path, _key_line(source, "path", line), label, "source.path",
                        f"{local!r} lies outside the catalogue's folder; keep LoRA files beside the catalogue "
                        "(or below it) so a shared catalogue cannot point at files elsewhere on the disk",
                        severity="warning"))
    provenance = raw.get("provenance")
    if isinstance(provenance, dict):
        for fact in provenance:
            if fact not in FACT_FIELDS:
                problems.append(
                    Problem(path, _key_line(provenance, fact, line), label, f"provenance.{fact}",
                            "provenance for an unknown fact" + _unknown_key_msg(fact, FACT_FIELDS)[len(f"unknown key {fact!r}"):])
                )
    problems.extend(_check_scale_raw(path, raw.get("scale"), label, _key_line(raw, "scale", line) or line))
    prompt = raw.get("style_prompt")
    if isinstance(prompt, str):
        estimate = estimate_clip_tokens(prompt)
        if estimate > CLIP_CONTEXT_LENGTH:
            problems.append(
                Problem(path, _key_line(raw, "style_prompt", line), label, "style_prompt",
                        f"about {estimate} CLIP tokens (estimated), over CLIP's {CLIP_CONTEXT_LENGTH}; "
                        "the text will be truncated when scored", severity="warning")
            )
    return problems


def _inside(folder: Path, local: str) -> bool:
    """Whether `local` (absolute, ~, or relative to `folder`) resolves inside `folder`."""
    try:
        target = (folder / Path(local).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return target == folder or folder in target.parents


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _check_scale_raw(path: Path, scale: Any, label: str, line: int) -> list[Problem]:
    """Every scale rule at once (pydantic stops at the first failing field); shapes and types are
    left to pydantic, which reports them with the same field names."""
    if not isinstance(scale, dict):
        return []
    rec = _number(scale.get("recommended"))
    rng = scale.get("range")
    bounds = [_number(b) for b in rng] if isinstance(rng, list) and len(rng) == 2 else None
    rec_line = _key_line(scale, "recommended", line) or line
    rng_line = _key_line(scale, "range", line) or line
    lo_s, hi_s = f"{SCALE_MIN:g}", f"{SCALE_MAX:g}"
    out: list[Problem] = []
    # YAML's true/yes would pass pydantic as 1.0: a scale must be written as a number
    if isinstance(scale.get("recommended"), bool):
        out.append(Problem(path, rec_line, label, "scale.recommended",
                           f"{scale['recommended']!r} is not a number (write the scale, e.g. 0.8)"))
    if isinstance(rng, list) and any(isinstance(b, bool) for b in rng):
        out.append(Problem(path, rng_line, label, "scale.range", "true/false is not a number (e.g. [0.5, 1.0])"))
        return out
    if rec is not None and not SCALE_MIN <= rec <= SCALE_MAX:
        out.append(Problem(path, rec_line, label, "scale.recommended", f"recommended {rec:g} is outside [{lo_s}, {hi_s}]"))
    if bounds is None or None in bounds:
        return out
    lo, hi = bounds
    for bound in (lo, hi):
        if not SCALE_MIN <= bound <= SCALE_MAX:
            out.append(Problem(path, rng_line, label, "scale.range", f"range bound {bound:g} is outside [{lo_s}, {hi_s}]"))
    if lo > hi:
        out.append(Problem(path, rng_line, label, "scale.range", f"range [{lo:g}, {hi:g}] is reversed"))
    elif rec is not None and SCALE_MIN <= rec <= SCALE_MAX and not lo <= rec <= hi:
        out.append(Problem(path, rec_line, label, "scale.recommended",
                           f"recommended {rec:g} is outside its range [{lo:g}, {hi:g}]"))
    return out


def _normalise_source(source: Any) -> tuple[Any, str | None]:
    """Add the `type` tag from the keys the user wrote (repo/url/path); or say why it can't."""
    if not isinstance(source, dict) or "type" in source:
        return source, None
    present = [t for t, key in SOURCE_KEY_FOR_TYPE.items() if key in source]
    if len(present) == 1:
        return {**source, "type": present[0]}, None
    if not present:
        return source, "needs exactly one of: repo (+ file, optional revision), url (+ sha256), path"
    keys = ", ".join(SOURCE_KEY_FOR_TYPE[t] for t in present)
    return source, f"has {keys}; a source is exactly one of a hub repo, a url or a local path"


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _validate_entry(path: Path, raw: dict, label: str, line: int) -> tuple[LoraEntry | None, list[Problem]]:
    data = _plain(raw)
    source, source_problem = _normalise_source(data.get("source"))
    if source_problem:
        return None, [Problem(path, _key_line(raw, "source", line), label, "source", source_problem)]
    if source is not None:
        data["source"] = source
    try:
        return LoraEntry.model_validate(data), []
    except ValidationError as exc:
        return None, [p for err in exc.errors() for p in _map_error(path, raw, label, line, err)]


def _map_error(path: Path, raw: dict, label: str, line: int, err: dict) -> list[Problem]:
    loc = list(err["loc"])
    if len(loc) >= 2 and loc[0] == "source" and loc[1] in SOURCE_TYPES:
        model: type[BaseModel] = SOURCE_TYPES[loc[1]]
        del loc[1]
    else:
        model = _model_at(loc[:-1])
    message = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        known = [f for f in model.model_fields if f != "type"]
        message = _unknown_key_msg(loc[-1], known)
    elif kind == "missing":
        message = "required field is missing"
    elif kind in ("literal_error", "enum") and "input" in err:
        message = f"{message} (got {err['input']!r})"
    if (loc == ["scale"] and kind == "value_error") or (
        loc == ["scale", "recommended"] and kind in ("greater_than_equal", "less_than_equal")
    ):
        return []  # the bounds are reported by _check_scale_raw, every one of them at once
    if loc == ["provenance"] and kind == "value_error" and "unknown field" in message:
        return []  # reported per fact, with its line, by _check_entry_raw
    return [Problem(path, _loc_line(raw, loc, line), label, _field_name(loc), message)]


def _model_at(loc: list) -> type[BaseModel]:
    """The pydantic model whose fields live at `loc` inside an entry (for 'did you mean')."""
    if not loc:
        return LoraEntry
    if loc[0] == "scale":
        return ScaleSpec
    if loc[0] == "provenance" and len(loc) == 2:
        return Provenance
    if loc[0] == "provenance" and len(loc) == 4 and loc[2] == "alternatives":
        return Alternative
    return LoraEntry


def _field_name(loc: list) -> str | None:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None


def _unknown_key_msg(key: Any, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key {key!r}{hint}"


def _key_line(node: Any, key: Any, default: int | None = None) -> int | None:
    try:
        return node.lc.key(key)[0] + 1
    except (AttributeError, KeyError, TypeError):
        return default


def _item_line(seq: Any, index: int) -> int:
    try:
        return seq.lc.item(index)[0] + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return 0


def _loc_line(node: Any, loc: list, default: int) -> int:
    """Line of the deepest key of `loc` that exists in the raw YAML."""
    line = default
    for part in loc:
        if isinstance(node, dict) and part in node:
            line = _key_line(node, part, line) or line
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            line = _item_line(node, part) or line
            node = node[part]
        else:
            break
    return line
