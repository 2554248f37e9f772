"""The dry-run time estimate of a provider that runs on Ray is divided by its workers (as a
hosted provider's is by its concurrency); no Ray instance is needed to plan."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lorascope.harness.ray_settings import LOCAL
from lorascope.harness.runner import run_suite_async
from lorascope.harness.suite import load_suite


def _dry(suite: Path, out: Path, ray: str | None = None):
    summary = asyncio.run(run_suite_async(load_suite(suite), out, dry_run=True, progress=False,
                                          handle_sigint=False, ray=ray))
    assert summary.exit_code == 0, summary
    return summary


def test_dry_run_time_is_divided_by_ray_workers(ray_project, tmp_path):
    single = _dry(ray_project / "local.yaml", tmp_path / "a").providers["diffusers"]
    on_ray = _dry(ray_project / "ray.yaml", tmp_path / "b")  # executor: ray, workers: 2
    assert single.estimated_seconds > 0
    assert on_ray.providers["diffusers"].estimated_seconds == single.estimated_seconds / 2
    assert not (tmp_path / "b" / "run.db").exists()  # a dry run writes nothing

    four = ray_project / "ray4.yaml"
    four.write_text((ray_project / "ray.yaml").read_text().replace("workers: 2", "workers: 4"))
    assert _dry(four, tmp_path / "c").providers["diffusers"].estimated_seconds == single.estimated_seconds / 4


def test_dry_run_with_the_ray_flag_and_no_worker_count_says_it_assumes_one(ray_project, tmp_path):
    single = _dry(ray_project / "local.yaml", tmp_path / "a")
    flagged = _dry(ray_project / "local.yaml", tmp_path / "b", ray=LOCAL)
    assert flagged.providers["diffusers"].estimated_seconds == single.providers["diffusers"].estimated_seconds
    assert any("Ray workers not set" in n and "assumes one" in n for n in flagged.notes), flagged.notes
    assert not any("Ray workers" in n for n in single.notes)
