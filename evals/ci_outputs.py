"""`lorascope compare --junit FILE / --markdown FILE`: a comparison in the forms CI systems show.

JUnit XML (the Jenkins/Surefire shape every CI test view reads): one `<testsuite>` per
provider, one `<testcase>` per compared cell, named by the cell (LoRA@scale, prompt, seed):

| verdict     | test case |
|-------------|-----------|
| `same`      | passes (the reason, e.g. "identical image", in `<system-out>`) |
| `regressed` | `<failure type="regressed">`: the metrics past their tolerance, or the error |
| `damaged`   | `<failure type="damaged">`: an image file missing or not matching its sha256 |
| `drifted`   | `<failure type="drifted">`: the picture changed within every tolerance. A CI view then shows what moved without the HTML report; the exit code stays the gate (1 only on a regression), so a job can publish drift without failing on it |
| `missing`   | `<failure type="missing">`: a baseline cell the run no longer has |
| `new`       | `<skipped>`: no baseline to test against yet |

A failure that belongs to no cell (a provider's median latency past `latency_ratio`, a run
served entirely from the shared cache without `--allow-cached`) is one more test case,
`run-level checks`, in its own suite.

The Markdown summary (GitHub's job summary, a PR comment) gives the overall verdict, per-provider
counts and latency/cost, and the worst cells in `lorascope compare`'s order. Everything that
came from a run (LoRA names, prompt ids, error text) is escaped: it renders as text, never as
Markdown or HTML.
"""

from __future__ import annotations

import html
import os
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from lorascope.evals.compare import CHANGED_VERDICTS, VERDICTS, CellComparison, CompareReport, worst_first

#: How each verdict appears in JUnit: None passes, else the child element and its `type`.
JUNIT_OUTCOME: dict[str, tuple[str, str] | None] = {
    "same": None,
    "regressed": ("failure", "regressed"),
    "damaged": ("failure", "damaged"),
    "drifted": ("failure", "drifted"),
    "missing": ("failure", "missing"),
    "new": ("skipped", "new"),
}
#: Cell verdicts that fail the comparison by themselves (the rest fail only the JUnit case).
FAILING_CELL_VERDICTS = frozenset({"regressed", "damaged"})
RUN_LEVEL_CASE = "run-level checks"
WORST_CELLS = 20
GITHUB_STEP_SUMMARY = "GITHUB_STEP_SUMMARY"
# XML 1.0 forbids most control characters even as entities; a provider's error text may hold them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def _xml_text(value: Any) -> str:
    return _XML_INVALID.sub("\N{REPLACEMENT CHARACTER}", str(value))


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def case_name(cell: CellComparison) -> str:
    """The cell without its provider (that is the suite): `ink@0.8 prompt=lighthouse seed=42`,
    plus the image index when a request returned several."""
    label = cell.label()
    name = label[len(cell.provider) + 1:] if label.startswith(f"{cell.provider} ") else label
    return name + (f" image={cell.image_index}" if cell.image_index else "")


def cell_details(cell: CellComparison) -> str:
    """The numbers behind a verdict, one per line, for a failure's body."""
    lines = [
        f"cell: {cell.label()}" + (f" image={cell.image_index}" if cell.image_index else ""),
        f"verdict: {cell.verdict}",
        *(f"why: {reason}" for reason in cell.reasons),
        f"image cosine: {_num(cell.image_cosine, '.4f')}",
        f"SSIM: {_num(cell.ssim, '.4f')}",
        f"CLIPScore change: {_num(cell.clip_score_delta, '+.4f')}",
        f"style shift change: {_num(cell.style_shift_delta, '+.4f')}",
        f"latency change s: {_num(cell.latency_delta_s, '+.2f')}",
        f"cost change USD: {_num(cell.cost_delta_usd, '+.4f')}",
        f"baseline: {cell.baseline_image or cell.baseline_status or 'not in the baseline'}",
        f"run: {cell.run_image or cell.run_status or 'not in the run'}",
    ]
    return "\n".join(lines)


def run_level_failures(report: CompareReport) -> list[str]:
    """Why the comparison failed beyond its cells, from its notes: a run served entirely from
    the cache that was not allowed (no cell can say that: its verdicts compare stored
    results), or a failure with no cell to blame (a provider's median latency)."""
    if not report.failed:
        return []
    refused = report.cache_only and not report.allow_cached
    if not refused and any(c.verdict in FAILING_CELL_VERDICTS for c in report.cells):
        return []
    return list(report.notes) or [f"overall verdict {report.overall}"]


def junit_xml(report: CompareReport, *, duration_s: float | None = None, timestamp: datetime | None = None) -> bytes:
    """The report as JUnit XML (UTF-8 bytes with an XML declaration)."""
    stamp = (timestamp or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    root = ET.Element("testsuites", name="lorascope compare")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    by_provider: dict[str, list[CellComparison]] = {}
    for cell in report.cells:
        by_provider.setdefault(cell.provider, []).append(cell)
    suites: list[tuple[str, list[ET.Element]]] = []
    for provider in sorted(by_provider):
        cases = []
        for cell in by_provider[provider]:
            case = ET.Element("testcase", name=_xml_text(case_name(cell)), classname=_xml_text(f"lorascope.compare.{provider}"))
            outcome = JUNIT_OUTCOME.get(cell.verdict, ("failure", cell.verdict))
            reasons = "; ".join(cell.reasons)
            if outcome is None:
                ET.SubElement(case, "system-out").text = _xml_text(reasons)
            else:
                tag, kind = outcome
                child = ET.SubElement(case, tag, message=_xml_text(f"{cell.label()}: {cell.verdict}: {reasons}"))
                if tag == "failure":
                    child.set("type", kind)
                    child.text = _xml_text(cell_details(cell))
            cases.append(case)
        suites.append((f"lorascope compare: {provider}", cases))
    run_failures = run_level_failures(report)
    if run_failures:
        case = ET.Element("testcase", name=RUN_LEVEL_CASE, classname="lorascope.compare")
        failure = ET.SubElement(case, "failure", type=report.overall, message=_xml_text(run_failures[0]))
        failure.text = _xml_text("\n".join(run_failures))
        suites.append(("lorascope compare: run", [case]))
    for name, cases in suites:
        counts = {
            "tests": len(cases),
            "failures": sum(1 for c in cases if c.find("failure") is not None),
            "errors": 0,
            "skipped": sum(1 for c in cases if c.find("skipped") is not None),
        }
        suite = ET.SubElement(root, "testsuite", name=_xml_text(name), timestamp=stamp,
                              **{k: str(v) for k, v in counts.items()})
        if duration_s is not None:
            suite.set("time", f"{duration_s:.3f}")
        props = ET.SubElement(suite, "properties")
        for key, value in (("baseline", report.baseline), ("run", report.run), ("clip_model", report.clip_model),
                           ("overall", report.overall)):
            ET.SubElement(props, "property", name=key, value=_xml_text(value))
        suite.extend(cases)
        for key in totals:
            totals[key] += counts[key]
    for key, value in totals.items():
        root.set(key, str(value))
    if duration_s is not None:
        root.set("time", f"{duration_s:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def md(value: Any) -> str:
    """Run-supplied text as literal Markdown text: HTML escaped, Markdown punctuation
    backslash-escaped, on one line (safe inside a table cell)."""
    text = html.escape(" ".join(_CONTROL.sub(" ", str(value)).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def markdown_summary(report: CompareReport, *, worst: int = WORST_CELLS) -> str:
    """Overall verdict, per-provider counts and latency/cost, the worst cells."""
    counts = ", ".join(f"{report.counts.get(v, 0)} {v}" for v in VERDICTS if report.counts.get(v))
    icon = "❌" if report.failed else {"same": "✅", "drifted": "⚠️"}.get(report.overall, "")
    refused = " (not a check: the run came entirely from the cache)" if report.failed and not report.regressed else ""
    out = [
        f"## lorascope compare: {icon} {report.overall}{refused}".strip(),
        "",
        f"**{md(report.run)}** against baseline **{md(report.baseline)}**, CLIP {md(report.clip_model)}: "
        f"{len(report.cells)} cells ({counts or 'none'}).",
        "",
    ]
    out += [f"> {md(note)}" for note in report.notes] + ([""] if report.notes else [])
    out += [
        "| provider | " + " | ".join(VERDICTS) + " | median latency s (baseline → run) | $/image (baseline → run) |",
        "|---|" + "---:|" * len(VERDICTS) + "---|---|",
    ]
    for provider, per in report.provider_counts().items():
        info: Mapping[str, Any] = report.providers.get(provider, {})
        latency = f"{_num(info.get('baseline_latency_median_s'), '.2f')} → {_num(info.get('run_latency_median_s'), '.2f')}"
        cost = f"{_num(info.get('baseline_cost_per_image_usd'), '.4f')} → {_num(info.get('run_cost_per_image_usd'), '.4f')}"
        out.append(f"| {md(provider)} | " + " | ".join(str(per[v]) for v in VERDICTS) + f" | {latency} | {cost} |")
    changed = worst_first([c for c in report.cells if c.verdict in CHANGED_VERDICTS])
    out.append("")
    if not changed:
        out.append("No cell changed.")
    else:
        out += [
            f"### Worst cells ({min(worst, len(changed))} of {len(changed)} changed)",
            "",
            "| verdict | provider | cell | why | cos | SSIM | ΔCLIPScore | Δstyle |",
            "|---|---|---|---|---:|---:|---:|---:|",
        ]
        for c in changed[:worst]:
            out.append(
                f"| {c.verdict} | {md(c.provider)} | {md(case_name(c))} | {md('; '.join(c.reasons))} | "
                f"{_num(c.image_cosine, '.4f')} | {_num(c.ssim, '.4f')} | {_num(c.clip_score_delta, '+.4f')} | "
                f"{_num(c.style_shift_delta, '+.4f')} |"
            )
        if len(changed) > worst:
            out += ["", f"{len(changed) - worst} more changed cell(s) in `compare.json` of the run."]
    return "\n".join(out) + "\n"


def _write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def write_junit(report: CompareReport, path: Path, *, duration_s: float | None = None) -> Path:
    return _write_atomic(Path(path), junit_xml(report, duration_s=duration_s))


def write_text(path: Path, text: str) -> Path:
    return _write_atomic(Path(path), text.encode("utf-8"))


def write_markdown(report: CompareReport, path: Path) -> Path:
    return write_text(path, markdown_summary(report))


def append_step_summary(text: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Append to GitHub Actions' job summary file when `GITHUB_STEP_SUMMARY` names one (the
    runner sets it in every job step; other steps append too, so never overwrite)."""
    target = (os.environ if environ is None else environ).get(GITHUB_STEP_SUMMARY)
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")
    return path
