"""An entry's reference in the forms hosted providers accept: an https URL, `owner/repo`, a path."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel

from lorascope.registry.models import HubSource, LoraEntry, PathSource, UrlSource

HUB_URL = "https://huggingface.co"


class LoraReferences(BaseModel):
    url: str | None = None  # https URL of the file (providers that fetch weights by URL)
    repo: str | None = None  # owner/repo (providers that take a Hugging Face repo id)
    file: str | None = None
    revision: str | None = None
    sha256: str | None = None
    path: Path | None = None  # local entries only, absolute


class UnknownFileError(ValueError):
    """A hub entry whose file name is not known yet (schema 2 allows it); nothing can fetch it."""


def hub_file_url(repo: str, file: str, revision: str | None = None, endpoint: str = HUB_URL) -> str:
    """The Hub's download URL for one file of a repo at a revision (default `main`)."""
    rev = quote(revision or "main", safe="")
    return f"{endpoint.rstrip('/')}/{repo}/resolve/{rev}/{quote(file)}"


def references(entry: LoraEntry, catalogue_dir: Path) -> LoraReferences:
    src = entry.source
    if isinstance(src, HubSource) and src.file is None:
        raise UnknownFileError(
            f"entry {entry.id!r}: the file in {src.repo} is not known yet; "
            f"`lorascope registry verify {entry.id} --write` fills it from the repo"
        )
    if isinstance(src, HubSource):
        return LoraReferences(
            url=hub_file_url(src.repo, src.file, src.revision),
            repo=src.repo,
            file=src.file,
            revision=src.revision,
            sha256=src.sha256,
        )
    if isinstance(src, UrlSource):
        return LoraReferences(url=src.url, file=src.url.split("?", 1)[0].rsplit("/", 1)[-1], sha256=src.sha256)
    assert isinstance(src, PathSource)
    path = src.path.expanduser()
    path = path if path.is_absolute() else (Path(catalogue_dir) / path)
    return LoraReferences(path=path.resolve(), file=path.name, sha256=src.sha256)
