"""Write reports: run folder in, one HTML file out (what the CLI and the demo call)."""

from __future__ import annotations

from pathlib import Path

from lorascope.reports.build_run import build_run_view
from lorascope.reports.inputs import RunData
from lorascope.reports.render import render, write_html

REPORT_NAME = "report.html"
COMPARE_REPORT_NAME = "compare.html"


def write_run_data_report(data: RunData, output: Path | None = None, progress: bool = False) -> Path:
    """Render `data` (already loaded) to `output` (default RUN/report.html)."""
    output = Path(output) if output else data.run_dir / REPORT_NAME
    view = build_run_view(data, report_dir=output.parent, progress=progress)
    return write_html(output, render("run.html.j2", view))


def write_run_report(run_dir: Path, output: Path | None = None, progress: bool = False) -> Path:
    from lorascope.reports.sources import load_run_data

    return write_run_data_report(load_run_data(Path(run_dir)), output, progress=progress)


def write_compare_report(baseline_dir: Path, run_dir: Path, output: Path | None = None,
                         progress: bool = False) -> Path:
    from lorascope.reports.build_compare import build_compare_view
    from lorascope.reports.compare_sources import load_compare_data

    run_dir = Path(run_dir)
    output = Path(output) if output else run_dir / COMPARE_REPORT_NAME
    data = load_compare_data(Path(baseline_dir), run_dir)
    view = build_compare_view(data, report_dir=output.parent, progress=progress)
    return write_html(output, render("compare.html.j2", view))
