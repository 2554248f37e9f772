"""`lorascope registry list|show|validate|inspect|add`.

Imports stay inside the commands and never reach torch/diffusers/open_clip/pandas, so these
commands start fast. Exit codes: 0 ok, 1 a check failed (invalid catalogue, incompatible
LoRA, failed download), 2 usage error (unknown id, missing file, bad argument).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from lorascope.registry.catalogue import Catalogue
    from lorascope.registry.inspect import LoraInspection
    from lorascope.registry.models import LoraEntry

app = typer.Typer(no_args_is_help=True, help="The LoRA catalogue (loras.yaml).", add_completion=False)

CatalogueOpt = Annotated[
    Optional[Path],
    typer.Option("--catalogue", "-c", help="Catalogue file (default: $LORASCOPE_CATALOGUE, ./loras.yaml, the project's)."),
]
UNCONFIRMED = "?"
SECONDARY = "~"
STATE_MARK = {"confirmed": "", "secondary": SECONDARY, "unverified": UNCONFIRMED}
LEGEND = (f"{SECONDARY} = secondary (a LoRA list or provider page, not the LoRA's own card or file); "
          f"{UNCONFIRMED} = unverified; no mark = confirmed from the LoRA's own repo")


def _err(message: str, code: int) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {_escape(message)}")
    return typer.Exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _load(path: Path | None) -> "Catalogue":
    from lorascope.registry.catalogue import default_catalogue_path, load_catalogue
    from lorascope.registry.problems import CatalogueError

    target = path or default_catalogue_path()
    if not target.is_file():
        raise _err(f"catalogue {target} not found", 2)
    try:
        catalogue = load_catalogue(target)
    except CatalogueError as exc:
        raise _err(str(exc), 1) from None
    err = _console_err()
    for warning in catalogue.warnings:
        err.print(f"[yellow]{_escape(str(warning))}[/]")
    return catalogue


def _console_err():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _mark(entry: "LoraEntry", fact: str, text: str) -> str:
    return f"{text}{STATE_MARK[entry.state(fact)]}"


def _tally(entry: "LoraEntry") -> str:
    """How many of the entry's facts are confirmed / secondary / unverified, e.g. `2✓ 3~ 1?`."""
    from lorascope.registry.models import FACT_FIELDS

    facts = [f for f in FACT_FIELDS if f in entry.provenance or f in ("source", "kind", "triggers", "scale")]
    states = [entry.state(f) for f in facts]
    return " ".join(f"{states.count(s)}{m or '✓'}" for s, m in STATE_MARK.items() if states.count(s))


def _source_label(entry: "LoraEntry", short: bool = False) -> str:
    src = entry.source
    if src.type == "hub" and short:
        return src.repo + (f"@{src.revision[:8]}" if src.revision else "") + ("" if src.file else " (file unknown)")
    if src.type == "hub":
        return f"{src.repo}:{src.file or '(file unknown)'}" + (f"@{src.revision[:12]}" if src.revision else "")
    if src.type == "url":
        return src.url
    return str(src.path)


@app.command("list")
def list_(
    catalogue: CatalogueOpt = None,
    kind: Annotated[Optional[str], typer.Option(help="Only this kind: style, character, concept, utility, training-adapter, speed, restoration, slider.")] = None,
    tag: Annotated[Optional[str], typer.Option(help="Only entries with this tag.")] = None,
) -> None:
    """A table of the catalogue's LoRAs; `~` marks a fact from a secondary source, `?` an unverified one."""
    from rich.table import Table

    from lorascope.registry.models import KINDS as kinds

    if kind is not None and kind not in kinds:
        raise _err(f"--kind must be one of {', '.join(kinds)} (got {kind!r})", 2)
    cat = _load(catalogue)
    entries = [e for e in cat.entries if (kind is None or e.kind == kind) and (tag is None or tag in e.tags)]
    table = Table(title=f"{len(entries)} of {len(cat.entries)} LoRAs in {cat.path}", title_justify="left")
    table.add_column("id", no_wrap=True)
    for col in ("kind", "source", "triggers", "scale", "facts", "tags"):
        table.add_column(col, overflow="fold")
    for e in entries:
        triggers = ", ".join(e.triggers) if e.triggers else "—"
        scale = f"{e.scale.recommended:g} [{e.scale.range[0]:g}–{e.scale.range[1]:g}]"
        table.add_row(
            e.id,
            _mark(e, "kind", e.kind),
            _escape(_mark(e, "source", _source_label(e, short=True))),
            _escape(_mark(e, "triggers", triggers)),
            _mark(e, "scale", scale),
            _tally(e),
            _escape(", ".join(e.tags)),
        )
    out = _console()
    out.print(table)
    out.print(LEGEND)


@app.command()
def show(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="The entry's id.")],
    catalogue: CatalogueOpt = None,
) -> None:
    """Everything the catalogue knows about one LoRA, with where each fact came from."""
    from lorascope.registry.references import references
    from lorascope.registry.usage import INTENDED_USE

    cat = _load(catalogue)
    try:
        e = cat.get(entry_id)
    except KeyError as exc:
        raise _err(str(exc), 2) from None
    try:
        refs = references(e, cat.dir)
    except ValueError as exc:  # a hub entry whose file is not known yet
        refs, unresolved = None, str(exc)
    else:
        unresolved = ""
    out = _console()
    line = cat.lines.get(e.id)
    out.print(f"[bold]{_escape(e.name)}[/] ({e.id}) — {cat.path}{f':{line}' if line else ''}")
    rows: list[tuple[str, str, str]] = [
        ("kind", e.kind, "kind"),
        ("source", _source_label(e), "source"),
        ("triggers", ", ".join(e.triggers) or "(none)", "triggers"),
        ("trigger position", e.trigger_position, ""),
        ("scale", f"recommended {e.scale.recommended:g}, range [{e.scale.range[0]:g}, {e.scale.range[1]:g}]", "scale"),
        ("style prompt", e.style_prompt or "(none)", "style_prompt"),
        ("license", e.license or "(unknown)", "license"),
        ("base model", e.base_model or "(not stated)", "base_model"),
        ("meant for", INTENDED_USE.get(e.kind, ""), ""),
        ("tags", ", ".join(e.tags) or "(none)", ""),
        ("notes", e.notes or "", ""),
        ("url", refs.url or "" if refs else unresolved, ""),
        ("repo id", refs.repo or "" if refs else "", ""),
        ("local path", str(refs.path) if refs and refs.path else "", ""),
        ("sha256", refs.sha256 or "" if refs else "", ""),
    ]
    colours = {"confirmed": "green", "secondary": "cyan", "unverified": "yellow"}
    for label, value, fact in rows:
        if not value:
            continue
        flag = ""
        p = e.provenance.get(fact) if fact else None
        if fact and p is None and not value.startswith("("):
            flag = f"  [yellow]{UNCONFIRMED} no provenance[/]"
        elif p is not None:
            mark = STATE_MARK[p.state]
            note = f"; {p.note}" if p.note else ""
            flag = f"  [{colours[p.state]}]{p.state}{mark}[/] — {_escape(p.source + note)}"
        out.print(f"  {label:<17} {_escape(value)}{flag}")
        if p is not None and p.url:
            out.print(f"  {'':<17}   [dim]{_escape(p.url)}[/]")
        for alt in p.alternatives if p is not None else ():
            where = f" ({alt.url})" if alt.url else ""
            note = f"; {alt.note}" if alt.note else ""
            out.print(f"  {'':<17}   [magenta]disagrees:[/] {_escape(_show_value(alt.value))} — "
                      f"{_escape(alt.source + where + note)}")


def _show_value(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)


@app.command()
def validate(
    path: Annotated[Optional[Path], typer.Argument(help="Catalogue to check (default: the one lorascope uses).")] = None,
) -> None:
    """Check a catalogue and print every problem with its file, line, entry and field."""
    from lorascope.registry.catalogue import check_catalogue, default_catalogue_path

    target = path or default_catalogue_path()
    if not target.is_file():
        raise _err(f"catalogue {target} not found", 2)
    entries, problems, _ = check_catalogue(target)
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    out = _console()
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        out.print(f"[{colour}]{_escape(str(p))}[/]")
    summary = f"{target}: {len(entries)} valid entries, {len(errors)} error(s), {len(warnings)} warning(s)"
    out.print(("[bold red]FAIL[/] " if errors else "[bold green]OK[/] ") + _escape(summary))
    if errors:
        raise typer.Exit(1)


def _print_inspection(ins: "LoraInspection") -> None:
    out = _console()
    colour = {"compatible": "green", "incompatible": "red", "unknown": "yellow"}[ins.compatibility.verdict]
    out.print(f"[bold]{_escape(ins.source)}[/]")
    rows = [
        ("format", ins.key_format),
        ("ranks", ", ".join(map(str, ins.ranks)) or "?"),
        ("alphas", ", ".join(f"{a:g}" for a in ins.alphas) or "(none stored: alpha = rank)"),
        ("targets", ", ".join(ins.targets) or "(none)"),
        ("blocks", ", ".join(f"{g} x{n}" for g, n in ins.blocks.items()) or "(none)"),
        ("dtypes", ", ".join(ins.dtypes)),
        ("parameters", f"{ins.parameter_count:,} in {ins.tensor_count} tensors"),
        ("size", f"{ins.file_size:,} bytes" if ins.file_size is not None else "(remote: not downloaded)"),
        ("sha256", ins.sha256 or "(remote: not downloaded)"),
    ]
    if ins.foreign_model:
        rows.append(("made for", ins.foreign_model))
    for label, value in rows:
        out.print(f"  {label:<11} {_escape(value)}")
    for key, value in sorted(ins.metadata.items()):
        shown = value if len(value) <= 100 else value[:97] + "..."
        out.print(f"  [dim]meta[/] {_escape(key)} = {_escape(shown)}")
    out.print(f"  [bold {colour}]{ins.compatibility.verdict}[/]: {_escape(ins.compatibility.reason)}")


_UNREACHABLE = ("ConnectError", "ConnectTimeout", "ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError")


def _remote_error(target: str, exc: Exception) -> str:
    """One line for a failed Hub read; when the Hub cannot be reached, say what to do instead."""
    text = f"{target}: {type(exc).__name__}: {exc}"
    if type(exc).__name__ in _UNREACHABLE:
        import os

        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        text += (f" -- the Hugging Face Hub ({endpoint}) cannot be reached: inspect a downloaded "
                 "file by its path, or set HF_ENDPOINT to a mirror you can reach")
    return text


@app.command()
def inspect(
    target: Annotated[str, typer.Argument(metavar="FILE|ID|OWNER/REPO:FILE", help="A local file, a catalogue id, or a Hub file.")],
    json_: Annotated[bool, typer.Option("--json", help="Print the inspection as JSON.")] = False,
    catalogue: CatalogueOpt = None,
) -> None:
    """Read a LoRA's safetensors header (never its tensors; Hub files are not downloaded) and judge whether it fits Z-Image Turbo; exit 1 when it does not."""
    from lorascope.registry.inspect import inspect_file, inspect_remote
    from lorascope.registry.safetensors_header import NotSafetensorsError

    try:
        local = Path(target)
        if local.is_file():
            if local.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"):
                raise _err(f"{target} is a pickle weight file; refused (pickle executes code when loaded)", 1)
            ins = inspect_file(local)
        elif ":" in target and "/" in target.split(":", 1)[0]:
            repo, _, file = target.partition(":")
            ins = inspect_remote(repo, file)
        else:
            cat = _load(catalogue)
            try:
                entry = cat.get(target)
            except KeyError as exc:
                if "/" in target or target.endswith(".safetensors"):
                    raise _err(f"{target}: no such file, and no catalogue entry of that id", 2) from None
                raise _err(str(exc), 2) from None
            ins = _inspect_entry(entry, cat.dir)
    except NotSafetensorsError as exc:
        raise _err(f"{target}: {exc}", 1) from None
    except typer.Exit:
        raise
    except Exception as exc:  # network / hub errors: one line, no traceback
        raise _err(_remote_error(target, exc), 1) from None
    if json_:
        typer.echo(ins.model_dump_json(indent=2))
    else:
        _print_inspection(ins)
    if ins.compatibility.verdict == "incompatible":
        raise typer.Exit(1)


def _inspect_entry(entry: "LoraEntry", catalogue_dir: Path) -> "LoraInspection":
    from lorascope.registry.inspect import inspect_file, inspect_remote
    from lorascope.registry.resolve import resolve

    src = entry.source
    if src.type == "hub":
        from huggingface_hub import try_to_load_from_cache

        from lorascope.registry.resolve import hf_cache_dir

        cached = try_to_load_from_cache(src.repo, src.file, cache_dir=hf_cache_dir(), revision=src.revision)
        if isinstance(cached, str):  # already downloaded: inspect it locally (sha256 included)
            return inspect_file(cached)
        return inspect_remote(src.repo, src.file, src.revision)
    resolved = resolve(entry, catalogue_dir)  # url: downloaded once, sha256-verified; path: as is
    return inspect_file(resolved.path)


@app.command()
def add(
    target: Annotated[str, typer.Argument(metavar="OWNER/REPO[:FILE]", help="A Hugging Face repo, optionally one file in it.")],
    catalogue: CatalogueOpt = None,
    entry_id: Annotated[Optional[str], typer.Option("--id", help="The new entry's id (default: from the repo name).")] = None,
    revision: Annotated[Optional[str], typer.Option(help="Branch, tag or commit to read (pinned as the commit seen).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Add it even if it does not fit Z-Image Turbo.")] = False,
) -> None:
    """Inspect a Hub LoRA remotely and append an entry for it, keeping the file's comments and order."""
    from lorascope.registry.add import AddError, add_entry, parse_target
    from lorascope.registry.catalogue import default_catalogue_path
    from lorascope.registry.models import SLUG
    from lorascope.registry.problems import CatalogueError

    try:
        parse_target(target)
    except ValueError as exc:
        raise _err(str(exc), 2) from None
    if entry_id is not None and not SLUG.match(entry_id):
        raise _err(f"--id {entry_id!r} is not a slug (lowercase letters, digits and '-')", 2)
    path = catalogue or default_catalogue_path()
    try:
        entry, ins = add_entry(path, target, entry_id=entry_id, revision=revision, force=force)
    except (AddError, CatalogueError) as exc:
        raise _err(str(exc), 1) from None
    except Exception as exc:  # hub errors: one line
        raise _err(_remote_error(target, exc), 1) from None
    out = _console()
    out.print(f"added [bold]{entry['id']}[/] to {_escape(str(path))}: {ins.key_format}, "
              f"{ins.compatibility.verdict} ({_escape(ins.compatibility.reason)})")
    out.print("facts lorascope assumed are marked confirmed: false; review kind, triggers, scale and add a style_prompt")


_VERDICT_STYLE = {"confirmed": "green", "new": "cyan", "unknown": "dim", "skipped": "dim",
                  "differs": "red", "missing": "red", "gone": "red", "not-zimage": "red"}


def _short(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


@app.command()
def verify(
    ids: Annotated[Optional[list[str]], typer.Argument(metavar="[ID ...]", help="Entries to check (default: all).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
    write: Annotated[bool, typer.Option("--write", help="Pin revision and sha256 and mark confirmed facts in the catalogue (comments and order kept).")] = False,
    catalogue: CatalogueOpt = None,
) -> None:
    """Check entries against their Hub repos (one request per repo): file, sha256, trigger, base model, license; exit 1 when anything differs."""
    import json as jsonlib

    from lorascope.registry.problems import CatalogueError
    from lorascope.registry.verify import FAILING, HubUnavailable, verify as run_verify, write_verified

    cat = _load(catalogue)
    try:
        for entry_id in ids or []:
            cat.get(entry_id)
    except KeyError as exc:
        raise _err(str(exc), 2) from None
    try:
        reports = run_verify(cat, ids or None)
    except HubUnavailable as exc:
        raise _err(str(exc), 2) from None
    except Exception as exc:  # any other Hub failure: one line, no traceback
        raise _err(_remote_error("registry verify", exc), 1) from None
    changed = 0
    if write:
        try:
            changed = write_verified(cat, reports)
        except CatalogueError as exc:
            raise _err(f"--write left {cat.path} unchanged: {exc}", 1) from None
    failed = [r for r in reports if r.failed]
    if json_:
        typer.echo(jsonlib.dumps({"catalogue": str(cat.path), "written": changed,
                                  "reports": [r.model_dump() for r in reports]}, indent=2, ensure_ascii=False))
    else:
        out = _console()
        for r in reports:
            head = f"[bold]{r.id}[/]" + (f"  {_escape(r.repo)}@{(r.commit or '?')[:12]}" if r.repo else "")
            out.print(head + ("  [red]FAIL[/]" if r.failed else ""))
            for c in r.checks:
                colour = _VERDICT_STYLE[c.status]
                values = ""
                if c.status == "differs":
                    values = f" ours {_escape(_short(c.ours))} vs the repo's {_escape(_short(c.theirs))}"
                elif c.status in ("confirmed", "new") and (c.theirs or c.ours) is not None:
                    values = f" {_escape(_short(c.theirs if c.theirs is not None else c.ours))}"
                detail = f" — {_escape(c.detail)}" if c.detail else ""
                out.print(f"  {c.field:<16} [{colour}]{c.status}[/]{values}{detail}")
        counts = {s: sum(c.status == s for r in reports for c in r.checks) for s in _VERDICT_STYLE}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        out.print(f"{len(reports)} entries checked: {summary}"
                  + (f"; {len(failed)} with problems ({', '.join(sorted({c.status for r in failed for c in r.checks if c.status in FAILING}))})" if failed else "")
                  + (f"; {changed} entries written to {_escape(str(cat.path))}" if write else ""))
    if failed:
        raise typer.Exit(1)
