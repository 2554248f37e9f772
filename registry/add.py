"""`lorascope registry add`: read a Hub LoRA's header remotely and append an entry for it.

The catalogue is rewritten with ruamel.yaml's round-trip mode, so comments, key order and
flow style survive. What the Hub or the file itself says is marked confirmed; everything
lorascope had to assume (kind, scale, a missing trigger) is marked unconfirmed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from lorascope.registry.catalogue import check_catalogue
from lorascope.registry.inspect import LoraInspection, hf_api, inspect_remote
from lorascope.registry.models import PICKLE_SUFFIXES, REPO_ID
from lorascope.registry.problems import CatalogueError

TRIGGER_METADATA_KEYS = ("trigger_word", "trigger_words", "trigger", "instance_prompt", "activation_text")
DEFAULT_SCALE = {"recommended": 0.8, "range": [0.6, 1.0]}


class AddError(Exception):
    """`add` could not build an entry; the message says why (exit 1)."""


def parse_target(target: str) -> tuple[str, str | None]:
    """`owner/repo[:file]` -> (repo, file or None)."""
    repo, _, file = target.partition(":")
    if not REPO_ID.match(repo):
        raise ValueError(f"{repo!r} is not a Hugging Face repo id of the form owner/name")
    return repo, (file or None)


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "lora"


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _flow(mapping: dict) -> Any:
    from ruamel.yaml.comments import CommentedMap

    node = CommentedMap(mapping)
    node.fa.set_flow_style()
    return node


def _seq_flow(items: list) -> Any:
    from ruamel.yaml.comments import CommentedSeq

    node = CommentedSeq(items)
    node.fa.set_flow_style()
    return node


def pick_file(repo: str, file: str | None, revision: str | None) -> tuple[str, str | None, str | None, int | None, Any]:
    """(file, commit sha, file sha256, size, model info) — from the Hub's repo listing."""
    info = hf_api().model_info(repo, revision=revision, files_metadata=True)
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    if file is None:
        candidates = sorted(n for n in siblings if n.endswith(".safetensors"))
        if not candidates:
            pickles = sorted(n for n in siblings if n.lower().endswith(PICKLE_SUFFIXES))
            extra = f" (only pickle files, refused: {', '.join(pickles)})" if pickles else ""
            raise AddError(f"{repo} has no .safetensors file{extra}")
        if len(candidates) > 1:
            raise AddError(f"{repo} has several .safetensors files; pick one with {repo}:FILE — " + ", ".join(candidates))
        file = candidates[0]
    if file.lower().endswith(PICKLE_SUFFIXES):
        raise AddError(f"{file!r} is a pickle weight file; refused (pickle executes code when loaded)")
    if not file.endswith(".safetensors"):
        raise AddError(f"{file!r} is not a .safetensors file")
    sibling = siblings.get(file)
    if siblings and sibling is None:
        raise AddError(f"{repo} has no file {file!r}; it has: {', '.join(sorted(siblings))}")
    sha = sibling.lfs.sha256 if sibling is not None and sibling.lfs is not None else None
    size = sibling.size if sibling is not None else None
    return file, info.sha, sha, size, info


def build_entry(
    entry_id: str, repo: str, file: str, commit: str | None, file_sha: str | None,
    inspection: LoraInspection, card_license: str | None, version: int = 1,
) -> dict[str, Any]:
    """The new entry as plain data, with provenance for every fact (in the catalogue's schema:
    version 1 `confirmed: true|false`, version 2 `state` + the URL it was read from)."""
    from ruamel.yaml.comments import CommentedMap

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    card_url = f"{endpoint}/{repo}"

    def fact(source: str, confirmed: bool, note: str | None = None, url: str | None = None) -> Any:
        rec: dict[str, Any] = {"source": source}
        if version >= 2:
            rec = {"state": "confirmed" if confirmed else "unverified", **rec}
            if confirmed:
                rec["url"] = url or card_url
        else:
            rec["confirmed"] = confirmed
        if note:
            rec["note"] = note
        return _flow(rec)

    today = dt.date.today().isoformat()
    hub = f"Hugging Face {repo}" + (f"@{commit[:12]}" if commit else "")
    triggers: list[str] = []
    trigger_key = next((k for k in TRIGGER_METADATA_KEYS if inspection.metadata.get(k, "").strip()), None)
    if trigger_key:
        triggers = [t.strip() for t in inspection.metadata[trigger_key].split(",") if t.strip()]
    verdict = inspection.compatibility
    source: dict[str, Any] = {"repo": repo, "file": file}
    if commit:
        source["revision"] = commit
    if file_sha:
        source["sha256"] = file_sha
    entry = CommentedMap()
    entry["id"] = entry_id
    entry["name"] = repo.split("/", 1)[1].replace("-", " ").replace("_", " ")
    entry["source"] = CommentedMap(source)
    entry["kind"] = "style"
    entry["triggers"] = _seq_flow(triggers)
    entry["scale"] = _flow({"recommended": DEFAULT_SCALE["recommended"], "range": _seq_flow(DEFAULT_SCALE["range"])})
    if card_license:
        entry["license"] = card_license
    entry["tags"] = _seq_flow(["added"])
    ranks = ", ".join(str(r) for r in inspection.ranks) or "?"
    entry["notes"] = (
        f"Added by `lorascope registry add` on {today}: {inspection.key_format} format, rank {ranks}; "
        f"{verdict.verdict}: {verdict.reason}. Write a style_prompt describing the look."
    )
    prov = CommentedMap()
    file_url = f"{card_url}/blob/{commit or 'main'}/{file}"
    prov["name"] = fact("lorascope (from the repo name)", False)
    prov["source"] = fact(hub + " (repo listing)", True,
                          "revision pinned to the commit seen" if commit else "revision not pinned", file_url)
    prov["kind"] = fact("lorascope default", False, "not stated in the file")
    prov["triggers"] = (
        fact(f"the file's own header (__metadata__.{trigger_key})", True, url=file_url)
        if trigger_key
        else fact("the file's own header", False, "no trigger in the header; check the model card")
    )
    prov["scale"] = fact("AI/ML API docs (scales typically 0.6-1.0)", False)
    if card_license:
        prov["license"] = fact(hub + " (model card metadata)", True)
    entry["provenance"] = prov
    return entry


def add_entry(
    catalogue_path: Path,
    target: str,
    *,
    entry_id: str | None = None,
    revision: str | None = None,
    force: bool = False,
) -> tuple[dict[str, Any], LoraInspection]:
    """Append an entry for `owner/repo[:file]`; the file is only written if it still validates.

    A LoRA judged incompatible with Z-Image Turbo is refused unless `force` is set."""
    repo, file = parse_target(target)
    from lorascope.registry import safe_yaml

    y = _yaml()
    try:  # within the same size/alias/depth limits as every catalogue load
        text = safe_yaml.read_text(catalogue_path) if catalogue_path.exists() else ""
        data = safe_yaml.load(text) if text.strip() else None
    except safe_yaml.YamlLimitError as exc:
        where = f"{catalogue_path}:{exc.line}" if exc.line else str(catalogue_path)
        raise AddError(f"{where}: {exc.message}; nothing was added") from None
    if data is None:
        from ruamel.yaml.comments import CommentedMap, CommentedSeq

        data = CommentedMap(version=1, loras=CommentedSeq())
    if data.get("loras") is None:
        from ruamel.yaml.comments import CommentedSeq

        data["loras"] = CommentedSeq()
    existing = {e.get("id") for e in data["loras"] if isinstance(e, dict)}
    entry_id = entry_id or slugify(repo.split("/", 1)[1])
    if entry_id in existing:
        raise AddError(f"{catalogue_path} already has an entry {entry_id!r}; choose another with --id")
    existing_sources = {
        (e.get("source") or {}).get("repo") for e in data["loras"] if isinstance(e, dict) and isinstance(e.get("source"), dict)
    }

    file, commit, file_sha, _size, info = pick_file(repo, file, revision)
    inspection = inspect_remote(repo, file, revision=commit or revision)
    if inspection.compatibility.verdict == "incompatible" and not force:
        raise AddError(
            f"{repo}/{file} is not a Z-Image Turbo LoRA: {inspection.compatibility.reason} (use --force to add it anyway)"
        )
    card = getattr(info, "card_data", None)
    card_license = getattr(card, "license", None) if card is not None else None
    entry = build_entry(entry_id, repo, file, commit, file_sha, inspection,
                        card_license if isinstance(card_license, str) else None, version=data.get("version", 1))
    if repo in existing_sources:
        entry["notes"] += f" Another entry already uses {repo}."
    data["loras"].append(entry)
    write_validated(catalogue_path, y, data)
    return entry, inspection


def write_validated(catalogue_path: Path, y: Any, data: Any) -> None:
    """Dump a round-trip document beside the catalogue and move it into place only if it still
    validates (so a bad edit never replaces a good file); raise CatalogueError otherwise."""
    buf = io.StringIO()
    y.dump(data, buf)
    new_text = buf.getvalue()
    fd, tmp = tempfile.mkstemp(prefix=".loras.", suffix=".yaml", dir=catalogue_path.resolve().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_text)
        _, problems, _ = check_catalogue(Path(tmp), cache=False)
        errors = [replace(p, file=catalogue_path) for p in problems if p.severity == "error"]
        if errors:
            raise CatalogueError(errors)
        os.replace(tmp, catalogue_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
