"""A catalogue's validation result, remembered by content, so `registry list` skips the YAML parse.

Why: the round-trip parse (line numbers for every problem, comment-keeping writes, with the
hostile-YAML limits) takes ~0.2-0.4 s for the 35-entry `loras.yaml` on these loaded 2-core
machines, most of a `lorascope registry list`; validating the parsed entries takes ~12 ms. The
result depends only on the file's bytes, its path (messages name it) and lorascope's registry
code and parser versions, so it is kept under a hash of exactly those, as JSON (never pickle),
in `$LORASCOPE_CACHE/catalogues` (else the user cache folder). Any edit to the file, or to the
code that validates it, is a new key. A cache that cannot be read or written is ignored;
`LORASCOPE_CATALOGUE_CACHE=0` turns it off. At most `KEEP` results are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from lorascope.registry.models import LoraEntry
from lorascope.registry.problems import Problem

KEEP = 16
MAX_BYTES = 4 * 1024 * 1024  # larger files are not cached (and the loader refuses them anyway)
Checked = tuple[list[LoraEntry], list[Problem], dict[str, int]]


def cache_dir() -> Path:
    from lorascope.registry.resolve import user_cache_dir

    root = os.environ.get("LORASCOPE_CACHE")
    return (Path(root) if root else user_cache_dir()) / "catalogues"


@lru_cache(maxsize=1)
def _code_stamp() -> bytes:
    """The registry's own source files and the parser/validator versions: a change to any of
    them may change what a file validates to."""
    import pydantic
    import ruamel.yaml

    digest = hashlib.sha256(f"{pydantic.VERSION}\0{ruamel.yaml.__version__}\0".encode())
    here = Path(__file__).resolve().parent
    for source in sorted(here.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.digest()


def _key(path: Path, data: bytes) -> str:
    digest = hashlib.sha256(b"catalogue-cache 1\0" + _code_stamp())
    digest.update(str(path).encode() + b"\0")  # messages name the path as given
    digest.update(data)
    return digest.hexdigest()


def _encode(result: Checked) -> str:
    entries, problems, lines = result
    return json.dumps({
        "entries": [e.model_dump(mode="json") for e in entries],
        "problems": [{"file": str(p.file), "line": p.line, "entry": p.entry, "field": p.field,
                      "message": p.message, "severity": p.severity} for p in problems],
        "lines": lines,
    })


def _decode(text: str) -> Checked:
    data = json.loads(text)
    entries = [LoraEntry.model_validate(e) for e in data["entries"]]
    problems = [Problem(Path(p["file"]), p["line"], p["entry"], p["field"], p["message"], p["severity"])
                for p in data["problems"]]
    return entries, problems, {str(k): int(v) for k, v in data["lines"].items()}


def cached(path: Path, check: Callable[[Path], Checked]) -> Checked:
    """`check(path)`, or what it returned before for these bytes at this path with this code."""
    if os.environ.get("LORASCOPE_CATALOGUE_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return check(path)
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            return check(path)
        data = path.read_bytes()
    except OSError:
        return check(path)
    folder = cache_dir()
    entry = folder / f"{_key(path, data)}.json"
    try:
        return _decode(entry.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not cached yet, or unreadable: validate (and overwrite it below)
    result = check(path)
    _store(folder, entry, result)
    return result


def _store(folder: Path, entry: Path, result: Checked) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".catalogue.", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(_encode(result))
            os.replace(tmp, entry)
        finally:
            Path(tmp).unlink(missing_ok=True)
        kept = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP:]:
            old.unlink(missing_ok=True)
    except (OSError, TypeError, ValueError):
        pass  # a read-only or full cache folder costs speed, never correctness
