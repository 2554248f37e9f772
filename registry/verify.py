"""`lorascope registry verify`: check catalogue entries against their own Hub repos.

Why: the catalogue was written from LoRA lists and stored pages; only the repo itself can
confirm a file name, a trigger, a license or a base model. One model-info request per repo
(`HfApi.model_info(..., files_metadata=True)`: files with sizes and LFS sha256, and the card's
metadata: `instance_prompt`, `base_model`, `license`, widget prompts) answers every entry that
uses the repo. HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are read when verify runs.

`write_verified` pins what was confirmed into the catalogue (revision, sha256, confirmed facts,
the repo's value beside ours where they differ), through the same ruamel round-trip writer as
`registry add`, so comments and order survive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from lorascope.registry.catalogue import Catalogue
from lorascope.registry.models import LoraEntry

Status = Literal["confirmed", "differs", "missing", "new", "unknown", "gone", "not-zimage", "skipped"]
#: Verdicts that make `registry verify` exit 1.
FAILING: frozenset[str] = frozenset({"differs", "missing", "gone", "not-zimage"})
HUB = "https://huggingface.co"


class FieldCheck(BaseModel):
    """One fact of one entry against its repo."""

    field: str
    status: Status
    ours: Any = None
    theirs: Any = None
    detail: str = ""


class EntryReport(BaseModel):
    id: str
    repo: str | None = None
    commit: str | None = None  # the commit the Hub answered for (what --write pins)
    file: str | None = None  # the file confirmed in the repo (or the only candidate)
    sha256: str | None = None
    size: int | None = None
    card_url: str | None = None
    checks: list[FieldCheck] = Field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status in FAILING for c in self.checks)

    def check(self, name: str) -> FieldCheck | None:
        return next((c for c in self.checks if c.field == name), None)


class HubUnavailable(Exception):
    """The Hub cannot be asked (offline mode, or no connection): one line, exit 2."""


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")


def _hub_offline() -> bool:
    from lorascope.registry.resolve import hub_offline

    return hub_offline()


def _is_zimage(name: str) -> bool:
    flat = name.lower().replace("_", "-")
    return "z-image" in flat or "zimage" in flat


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if v is not None]


def _card(info: Any) -> dict[str, Any]:
    card = getattr(info, "card_data", None)
    return card.to_dict() if card is not None else {}


def _split_triggers(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _fetch(repo: str, revision: str) -> tuple[Any, str | None, str]:
    """(model info or None, error status, error detail) for one repo at one revision."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    from lorascope.registry.inspect import hf_api

    try:
        return hf_api().model_info(repo, revision=revision, files_metadata=True), None, ""
    except GatedRepoError:
        return None, "unknown", "gated repo: accept its terms on the Hub and set HF_TOKEN"
    except RevisionNotFoundError:
        return None, "gone", f"revision {revision} is not in {repo}"
    except RepositoryNotFoundError:
        return None, "gone", f"{repo} does not exist on the Hub (deleted, renamed or private)"
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            return None, "gone", f"{repo} does not exist on the Hub"
        raise
    except Exception as exc:
        if type(exc).__name__ in ("ConnectError", "ConnectTimeout", "ConnectionError", "OfflineModeIsEnabled",
                                  "ReadTimeout", "ProxyError"):
            raise HubUnavailable(f"the Hugging Face Hub ({hub_endpoint()}) cannot be reached: "
                                 f"{type(exc).__name__}") from None
        raise


def verify(catalogue: Catalogue, ids: list[str] | None = None) -> list[EntryReport]:
    """One report per chosen entry (all when `ids` is empty), in catalogue order."""
    if _hub_offline():
        raise HubUnavailable("registry verify reads each LoRA's repo from the Hugging Face Hub, and "
                             "HF_HUB_OFFLINE is set: unset it, or point HF_ENDPOINT at a mirror you can reach")
    entries = [catalogue.get(i) for i in ids] if ids else list(catalogue.entries)
    seen: dict[tuple[str, str], tuple[Any, str | None, str]] = {}
    reports = []
    for entry in entries:
        src = entry.source
        if src.type != "hub":
            reports.append(EntryReport(id=entry.id, checks=[FieldCheck(
                field="source", status="skipped", detail=f"a {src.type} entry: not on the Hub")]))
            continue
        key = (src.repo, src.revision or "main")
        if key not in seen:  # one request per repo (and pinned revision)
            seen[key] = _fetch(*key)
        reports.append(_check_entry(entry, *seen[key]))
    return reports


def _check_entry(entry: LoraEntry, info: Any, error: str | None, detail: str) -> EntryReport:
    src = entry.source
    assert src.type == "hub"
    report = EntryReport(id=entry.id, repo=src.repo, card_url=f"{hub_endpoint()}/{src.repo}")
    if info is None:
        report.checks.append(FieldCheck(field="source", status=error or "unknown", ours=src.repo, detail=detail))
        return report
    report.commit = info.sha
    checks = report.checks
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    candidates = sorted(n for n in siblings if n.endswith(".safetensors"))
    sibling = siblings.get(src.file) if src.file else None
    if sibling is not None:
        report.file = src.file
    elif src.file is None and len(candidates) == 1:
        report.file = candidates[0]
        sibling = siblings[candidates[0]]
    if sibling is not None:
        report.sha256 = sibling.lfs.sha256 if sibling.lfs is not None else None
        report.size = sibling.size
    listing = ", ".join(candidates) or "(no .safetensors file)"
    if src.file is None:
        checks.append(FieldCheck(field="source.file", status="missing", theirs=candidates,
                                 detail=f"not known; the repo has: {listing}"
                                 + (" (--write takes it)" if report.file else "")))
    elif sibling is None:
        checks.append(FieldCheck(field="source.file", status="missing", ours=src.file, theirs=candidates,
                                 detail=f"not in {src.repo}@{(info.sha or '')[:12]}; its .safetensors files: {listing}"))
    else:
        checks.append(FieldCheck(field="source.file", status="confirmed", ours=src.file,
                                 detail=f"{report.size:,} bytes" if report.size is not None else ""))
        if src.sha256 and report.sha256 and src.sha256 != report.sha256:
            checks.append(FieldCheck(field="source.sha256", status="differs", ours=src.sha256, theirs=report.sha256,
                                     detail="the file changed since it was pinned"))
    if src.revision:
        checks.append(FieldCheck(field="source.revision", status="confirmed", ours=src.revision, theirs=info.sha))

    card = _card(info)
    checks.append(_check_triggers(entry, card))
    checks.append(_check_base_model(entry, card))
    checks.append(_check_license(entry, card))
    return report


def _check_triggers(entry: LoraEntry, card: dict[str, Any]) -> FieldCheck:
    ours = list(entry.triggers)
    prompt = card.get("instance_prompt")
    if isinstance(prompt, list):
        prompt = ", ".join(str(p) for p in prompt)
    if isinstance(prompt, str) and prompt.strip():
        theirs = _split_triggers(prompt)
        same = [t.casefold() for t in ours] == [t.casefold() for t in theirs] or (
            ", ".join(ours).casefold() == prompt.strip().casefold())
        if same:
            return FieldCheck(field="triggers", status="confirmed", ours=ours, theirs=theirs, detail="card instance_prompt")
        return FieldCheck(field="triggers", status="differs", ours=ours, theirs=theirs, detail="card instance_prompt")
    widgets = [w.get("text", "") for w in card.get("widget") or [] if isinstance(w, dict)]
    if ours and widgets and all(any(t.casefold() in w.casefold() for w in widgets) for t in ours):
        return FieldCheck(field="triggers", status="confirmed", ours=ours, detail="in the card's widget prompts")
    return FieldCheck(field="triggers", status="unknown", ours=ours, detail="the card states no instance_prompt")


def _check_base_model(entry: LoraEntry, card: dict[str, Any]) -> FieldCheck:
    theirs = _as_list(card.get("base_model"))
    if not theirs:
        return FieldCheck(field="base_model", status="unknown", ours=entry.base_model, detail="the card states none")
    zimage = [b for b in theirs if _is_zimage(b)]
    if not zimage:
        return FieldCheck(field="base_model", status="not-zimage", ours=entry.base_model, theirs=theirs,
                          detail="the card's base_model is not Z-Image: this LoRA was made for another model")
    if entry.base_model is None:
        return FieldCheck(field="base_model", status="new", theirs=zimage[0], detail="card base_model")
    if entry.base_model.casefold() in (b.casefold() for b in theirs):
        return FieldCheck(field="base_model", status="confirmed", ours=entry.base_model, theirs=zimage[0])
    return FieldCheck(field="base_model", status="differs", ours=entry.base_model, theirs=zimage[0])


def _check_license(entry: LoraEntry, card: dict[str, Any]) -> FieldCheck:
    theirs = card.get("license")
    if not isinstance(theirs, str) or not theirs:
        return FieldCheck(field="license", status="unknown", ours=entry.license, detail="the card states none")
    if entry.license is None:
        return FieldCheck(field="license", status="new", theirs=theirs, detail="card license")
    if entry.license.casefold() == theirs.casefold():
        return FieldCheck(field="license", status="confirmed", ours=entry.license, theirs=theirs)
    return FieldCheck(field="license", status="differs", ours=entry.license, theirs=theirs)


# ------------------------------------------------------------------------------------- --write


def write_verified(catalogue: Catalogue, reports: list[EntryReport]) -> int:
    """Pin and confirm what the Hub confirmed; returns how many entries changed.

    Facts that differ keep our value and gain the repo's as an alternative, for a person to
    decide. The file is only written if it still validates (as `registry add`)."""
    from lorascope.registry.add import _flow, _seq_flow, _yaml, write_validated

    y = _yaml()
    data = y.load(catalogue.path.read_text(encoding="utf-8"))
    v2 = catalogue.version >= 2
    raws = {e.get("id"): e for e in data["loras"] if isinstance(e, dict)}
    changed = 0
    for report in reports:
        raw = raws.get(report.id)
        if raw is None or report.commit is None:
            continue
        before = repr(raw)
        prov = raw.get("provenance")
        if prov is None:
            from ruamel.yaml.comments import CommentedMap

            prov = raw["provenance"] = CommentedMap()
        hub = f"Hugging Face {report.repo}@{report.commit[:12]}"

        def record(what: str, url: str, keep: Any = None) -> Any:
            rec: dict[str, Any] = {"state": "confirmed"} if v2 else {}
            rec["source"] = f"{hub} ({what})"
            if not v2:
                rec["confirmed"] = True
            rec["url"] = url
            alternatives = keep.get("alternatives") if isinstance(keep, dict) else None
            node = _flow(rec)
            if alternatives:
                node["alternatives"] = alternatives
                node.fa.set_block_style()
            return node

        def add_alternative(fact: str, value: Any, what: str) -> None:
            rec = prov.get(fact)
            if not isinstance(rec, dict):
                return
            alts = rec.get("alternatives")
            if alts is None:
                from ruamel.yaml.comments import CommentedSeq

                alts = rec["alternatives"] = CommentedSeq()
            if any(isinstance(a, dict) and a.get("value") == value for a in alts):
                return
            alts.append(_flow({"value": _seq_flow(value) if isinstance(value, list) else value,
                               "source": f"{hub} ({what})", "url": report.card_url}))
            if hasattr(rec, "fa"):
                rec.fa.set_block_style()

        source = raw["source"]
        file_url = f"{report.card_url}/blob/{report.commit}/{report.file}" if report.file else None
        file_check = report.check("source.file")
        if report.file and file_check is not None and (file_check.status == "confirmed" or source.get("file") is None):
            source["file"] = report.file
            source["revision"] = report.commit
            if report.sha256:
                source["sha256"] = report.sha256
            prov["source"] = record("repo listing; revision and sha256 pinned", file_url, prov.get("source"))
        for check in report.checks:
            if check.field == "triggers" and check.status == "confirmed":
                prov["triggers"] = record(f"model card: {check.detail}", report.card_url, prov.get("triggers"))
            elif check.field in ("license", "base_model") and check.status in ("confirmed", "new"):
                if check.status == "new":
                    _insert_fact(raw, check.field, check.theirs)
                prov[check.field] = record(f"model card {check.field}", report.card_url, prov.get(check.field))
            elif check.field in ("triggers", "license", "base_model") and check.status == "differs":
                add_alternative(check.field, check.theirs, f"model card {check.field}")
        if repr(raw) != before:
            changed += 1
    if changed:
        write_validated(catalogue.path, y, data)
    return changed


def _insert_fact(raw: Any, key: str, value: Any) -> None:
    """Put a new top-level fact before `tags`/`notes`/`provenance`, where a person would write it."""
    if key in raw:
        raw[key] = value
        return
    keys = list(raw.keys())
    for anchor in ("tags", "notes", "provenance"):
        if anchor in keys:
            raw.insert(keys.index(anchor), key, value)
            return
    raw[key] = value
