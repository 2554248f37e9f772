"""The Ray executor on a local Ray instance (2 CPU workers, tiny-random pipeline, 20 cells):
same bytes as a single-process run, each LoRA file loaded at most once per worker, a killed
worker's cells finished by the other exactly once, Ctrl-C leaves a run that resumes (through
`lorascope run --ray-address ADDRESS`, joining the running instance) without resending anything done."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lorascope.harness.runner import run_suite_async
from lorascope.harness.store import SharedCache
from lorascope.harness.suite import load_suite

CELLS = 20  # conftest GRID: 2 prompts x 2 seeds x (baseline + 2 LoRAs x 2 scales)



def _images(run: Path) -> dict[str, bytes]:
    """cell id -> the stored image's bytes, read through run.db (the source of truth)."""
    db = sqlite3.connect(run / "run.db")
    rows = db.execute(
        "SELECT c.cell_id, i.path FROM cells c JOIN generations g ON g.fingerprint = c.fingerprint "
        "JOIN images i ON i.generation_id = g.id WHERE g.status = 'succeeded'"
    ).fetchall()
    db.close()
    return {cell: (run / path).read_bytes() for cell, path in rows}


def _successes(run: Path) -> Counter[str]:
    db = sqlite3.connect(run / "run.db")
    rows = db.execute("SELECT fingerprint FROM generations WHERE status = 'succeeded'").fetchall()
    db.close()
    return Counter(fp for (fp,) in rows)


def _live_workers(ray) -> list[str]:
    return [a["name"] if isinstance(a, dict) else a for a in ray.util.list_named_actors()
            if (a["name"] if isinstance(a, dict) else a).startswith("lorascope-")]


@pytest.fixture(scope="module")
def reference(ray_project, tmp_path_factory) -> Path:
    """The same grid in this process (the in-process executor), torch on one thread like each worker."""
    import torch

    out = tmp_path_factory.mktemp("reference") / "run"
    cache = SharedCache(out.parent / "cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = asyncio.run(run_suite_async(load_suite(ray_project / "local.yaml"), out, progress=False,
                                              handle_sigint=False, cache=cache))
    finally:
        torch.set_num_threads(threads)
    assert summary.exit_code == 0 and summary.providers["diffusers"].succeeded == CELLS
    assert summary.workers == {}
    return out


async def test_ray_grid_is_byte_identical_and_loads_each_lora_once_per_worker(ray_cluster, ray_project, reference,
                                                                              tmp_path):
    out = tmp_path / "run"
    summary = await run_suite_async(load_suite(ray_project / "ray.yaml"), out, progress=False, handle_sigint=False)
    assert summary.exit_code == 0, summary
    assert summary.providers["diffusers"].succeeded == CELLS

    expected, got = _images(reference), _images(out)
    assert len(expected) == CELLS and got == expected  # every cell id, byte for byte

    workers = summary.workers
    assert sorted(workers) == ["diffusers/w0", "diffusers/w1"]
    assert all(w.cells > 0 for w in workers.values()), workers  # both did work
    assert sum(w.cells for w in workers.values()) == CELLS
    for w in workers.values():
        assert set(w.file_loads.values()) <= {1}, w.file_loads  # no file loaded twice on one worker
        assert w.lora_loads == len(w.file_loads)  # the provider's own counter agrees
    # grouped placement: 2 files, 2 workers -> at most 4 loads (cell by cell round robin: ~16)
    assert sum(w.lora_loads for w in workers.values()) <= 4
    db = sqlite3.connect(out / "run.db")
    ran_on = Counter(json.loads(m)["ray_worker"] for (m,) in db.execute(
        "SELECT metadata_json FROM generations WHERE status = 'succeeded'"))
    db.close()
    assert ran_on == {name: w.generations for name, w in workers.items()}
    assert _live_workers(ray_cluster) == []  # the actors were stopped


async def test_killed_worker_cells_are_finished_by_the_other_exactly_once(ray_cluster, ray_project, tmp_path):
    out = tmp_path / "run"
    run = asyncio.create_task(run_suite_async(load_suite(ray_project / "ray.yaml"), out, progress=False,
                                              handle_sigint=False))
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and not run.done():
        await asyncio.sleep(0.1)
        if not (out / "run.db").exists():
            continue
        db = sqlite3.connect(out / "run.db")
        done = [json.loads(m).get("ray_worker") for (m,) in db.execute(
            "SELECT metadata_json FROM generations WHERE status = 'succeeded'")]
        db.close()
        if "diffusers/w1" in done and len(done) < CELLS // 2:
            victim = next(n for n in _live_workers(ray_cluster) if n.endswith("-w1"))
            ray_cluster.kill(ray_cluster.get_actor(victim))
    assert victim is not None, "the run finished before a worker could be killed"
    summary = await run

    assert summary.exit_code == 0, summary
    assert summary.workers["diffusers/w1"].lost
    successes = _successes(out)
    assert len(successes) == CELLS and set(successes.values()) == {1}  # every cell, exactly once
    db = sqlite3.connect(out / "run.db")
    lost = db.execute("SELECT COUNT(*) FROM generations WHERE error_kind = 'worker_lost'").fetchone()[0]
    db.close()
    assert lost >= 1  # the killed worker's batch was closed and re-queued, not dropped
    assert any("re-queued" in note for note in summary.notes)


async def test_ctrl_c_stops_workers_and_the_run_resumes_through_the_cli(ray_cluster, ray_project, tmp_path):
    out = tmp_path / "run"
    run = asyncio.create_task(run_suite_async(load_suite(ray_project / "ray.yaml"), out, progress=False))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not run.done():
        await asyncio.sleep(0.1)
        if (out / "run.db").exists() and sum(_successes(out).values()) >= 4:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, handled by the runner
            break
    summary = await run
    assert summary.interrupted and summary.exit_code == 130
    assert _live_workers(ray_cluster) == []  # Ctrl-C stopped the workers
    done_before = set(_successes(out))
    assert 4 <= len(done_before) < CELLS
    db = sqlite3.connect(out / "run.db")
    last_id = db.execute("SELECT MAX(id) FROM generations").fetchone()[0]
    db.close()

    # resume: the plain suite (no executor setting) sent to Ray by the flag, joining this instance
    address = ray_cluster.get_runtime_context().gcs_address
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lorascope"), "run", str(ray_project / "local.yaml"), "--out", str(out),
         "--no-progress", "--ray-address", address],
        capture_output=True, text=True, timeout=240, env={**os.environ},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db = sqlite3.connect(out / "run.db")
    sent_now = {fp for (fp,) in db.execute("SELECT fingerprint FROM generations WHERE id > ?", (last_id,))}
    workers = {json.loads(m).get("ray_worker") for (m,) in db.execute(
        "SELECT metadata_json FROM generations WHERE id > ? AND status = 'succeeded'", (last_id,))}
    db.close()
    assert sent_now and not (sent_now & done_before)  # nothing already done was sent again
    assert workers <= {"diffusers/w0", "diffusers/w1"} and workers  # ran on Ray workers
    successes = _successes(out)
    assert len(successes) == CELLS and set(successes.values()) == {1}
    assert "Ray worker" in proc.stderr  # the summary names the workers


def _errors(run: Path) -> list[tuple[str, str, str]]:
    """(fingerprint, error kind, message) of every failed attempt, in order."""
    db = sqlite3.connect(run / "run.db")
    rows = db.execute("SELECT fingerprint, error_kind, error_message FROM generations WHERE status = 'failed' "
                      "ORDER BY id").fetchall()
    db.close()
    return rows


async def test_out_of_memory_batches_split_into_single_cells_and_a_worker_that_fails_to_start_is_dropped(
        ray_cluster, ray_project, reference, tmp_path, monkeypatch):
    # seeds batched in pairs; the tiny transformer raises torch's CUDA OOM for more than one image
    # per call (test hook); worker 1 fails to load its pipeline, so worker 0 runs the whole grid
    suite = ray_project / "ray-batch.yaml"
    suite.write_text((ray_project / "ray.yaml").read_text().replace("threads_per_worker: 1",
                                                                    "threads_per_worker: 1, batch_seeds: true"))
    monkeypatch.setenv("LORASCOPE_TEST_RAY_FAULTS", "oom_above=1,fail_start=1")
    out = tmp_path / "run"
    summary = await run_suite_async(load_suite(suite), out, progress=False, handle_sigint=False)

    assert summary.exit_code == 0, summary
    assert sorted(summary.workers) == ["diffusers/w0"]  # the worker that failed to start was dropped
    assert any("1 Ray worker(s) failed to start" in n and "diffusers/w1" in n and "running on the other 1" in n
               for n in summary.notes), summary.notes
    successes = _successes(out)
    assert len(successes) == CELLS and set(successes.values()) == {1}
    # every pair ran out of memory once, then each seed alone made the single-process image
    errors = _errors(out)
    assert len(errors) == CELLS and {k for _, k, _ in errors} == {"out_of_memory"}
    assert all("in a batch of 2" in m and "re-queued as single cells" in m and "CUDA out of memory" in m
               for _, _, m in errors), errors[:2]
    assert Counter(fp for fp, _, _ in errors) == Counter(successes)  # one failed attempt per cell, then success
    assert _images(out) == _images(reference)
    assert any(f"{CELLS} generation(s) re-queued as single cells" in n for n in summary.notes), summary.notes
    assert _live_workers(ray_cluster) == []


async def test_a_cell_out_of_memory_alone_is_tried_on_each_worker_then_failed(ray_cluster, ray_project, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("LORASCOPE_TEST_RAY_FAULTS", "oom_above=0")  # even one image is too many
    out = tmp_path / "run"
    summary = await run_suite_async(load_suite(ray_project / "ray.yaml"), out, progress=False, handle_sigint=False)

    ps = summary.providers["diffusers"]
    assert summary.exit_code == 1 and ps.failed == CELLS and ps.succeeded == 0 and ps.not_sent == 0, summary
    errors = _errors(out)
    attempts = Counter(fp for fp, _, _ in errors)
    assert len(attempts) == CELLS and set(attempts.values()) == {2}  # once on each worker, never more
    final = {}
    for fp, kind, message in errors:
        assert kind == "out_of_memory"
        final[fp] = message
    for message in final.values():  # the last attempt of each says it is over, and what to do
        assert "even alone, on every Ray worker that tried it (diffusers/w0, diffusers/w1)" in message, message
        assert "lower the size" in message
    assert any(f"; {CELLS} failed on every one" in n for n in summary.notes), summary.notes


async def test_every_worker_lost_leaves_the_rest_unsent_and_the_same_command_resumes(ray_cluster, ray_project,
                                                                                      tmp_path):
    out = tmp_path / "run"
    suite = load_suite(ray_project / "ray.yaml")
    run = asyncio.create_task(run_suite_async(suite, out, progress=False, handle_sigint=False))
    killed: list[str] = []
    deadline = time.monotonic() + 240
    while not killed and time.monotonic() < deadline and not run.done():
        await asyncio.sleep(0.05)
        if (out / "run.db").exists() and sum(_successes(out).values()) >= 2:
            killed = _live_workers(ray_cluster)
            for name in killed:
                ray_cluster.kill(ray_cluster.get_actor(name))
    assert len(killed) == 2, "the run finished before its workers could be killed"
    summary = await run

    ps = summary.providers["diffusers"]
    assert summary.exit_code == 1, summary
    assert "every Ray worker was lost" in (summary.fatal or "") and "run the same command again" in summary.fatal
    assert all(w.lost for w in summary.workers.values())
    done_before = set(_successes(out))
    assert 2 <= len(done_before) < CELLS
    assert ps.not_sent == CELLS - len(done_before) - ps.failed
    db = sqlite3.connect(out / "run.db")
    last_id = db.execute("SELECT MAX(id) FROM generations").fetchone()[0]
    db.close()

    again = await run_suite_async(load_suite(ray_project / "ray.yaml"), out, progress=False, handle_sigint=False)
    assert again.exit_code == 0, again
    db = sqlite3.connect(out / "run.db")
    sent_now = {fp for (fp,) in db.execute("SELECT fingerprint FROM generations WHERE id > ?", (last_id,))}
    db.close()
    assert sent_now and not (sent_now & done_before)  # nothing already done was sent again
    successes = _successes(out)
    assert len(successes) == CELLS and set(successes.values()) == {1}


# ---- LoRA files shipped to workers that cannot read the driver's disk (ship_loras) ----

def _images_by_fingerprint(run: Path) -> dict[str, bytes]:
    db = sqlite3.connect(run / "run.db")
    rows = db.execute("SELECT g.fingerprint, i.path FROM generations g JOIN images i ON i.generation_id = g.id "
                      "WHERE g.status = 'succeeded'").fetchall()
    db.close()
    return {fp: (run / path).read_bytes() for fp, path in rows}


def _lora_files(run: Path) -> list[list[str]]:
    """What each successful generation's worker loaded (`metadata.lora_files`; [] for the baseline)."""
    db = sqlite3.connect(run / "run.db")
    rows = db.execute("SELECT metadata_json FROM generations WHERE status = 'succeeded'").fetchall()
    db.close()
    return [json.loads(m).get("lora_files", []) for (m,) in rows]


async def test_always_ship_loads_every_lora_from_the_workers_cache_folder_with_the_same_images(
        ray_cluster, ray_project, reference, tmp_path):
    from lorascope.registry.digest import sha256_file

    cache = tmp_path / "worker-cache"
    suite = ray_project / "ray-ship-always.yaml"
    suite.write_text((ray_project / "ray.yaml").read_text().replace(
        "threads_per_worker: 1", f"threads_per_worker: 1, ship_loras: always, lora_cache: '{cache}'"))
    out = tmp_path / "run"
    summary = await run_suite_async(load_suite(suite), out, progress=False, handle_sigint=False)

    assert summary.exit_code == 0, summary
    assert _images(out) == _images(reference)  # byte for byte, every cell
    shas = {sha256_file(ray_project / "loras" / f"{n}.safetensors") for n in ("alpha", "beta")}
    expected = {str(cache / sha[:2] / f"{sha}.safetensors") for sha in shas}
    loaded = [files for files in _lora_files(out) if files]
    assert len(loaded) == CELLS - 4  # every LoRA cell (4 are baselines)
    assert {f for files in loaded for f in files} == expected  # never the driver's own path
    assert {str(p) for p in cache.rglob("*") if p.is_file()} == expected  # the two files, nothing else
    assert any("2 LoRA file(s)" in n and "ship_loras: always" in n for n in summary.notes), summary.notes


async def test_auto_ships_only_the_lora_a_worker_cannot_read_and_never_bytes_other_than_planned(
        ray_cluster, ray_project, reference, tmp_path):
    """`loras/hidden.safetensors` exists in the driver's process only: a link to /proc/self/fd/N,
    where N is this process's open descriptor of a file whose name is gone; in a worker that
    link names its own descriptor N (none, or another file). beta sits at a path both can read.
    `loras/changing.safetensors` is hidden the same way and replaced by other bytes once the run
    is planned (run.db appears), before any worker asks for it."""
    import shutil

    from lorascope.harness.lora_writer import write_lora
    from lorascope.harness.providers.local import DiffusersProvider
    from lorascope.registry.digest import sha256_file

    def driver_only(path: Path, fd_number: int) -> None:
        """Keep `path` open as descriptor `fd_number` of this process, then remove its name."""
        fd = os.open(path, os.O_RDONLY)
        with pytest.raises(OSError):
            os.fstat(fd_number)  # free in this process
        os.dup2(fd, fd_number)
        os.close(fd)
        path.unlink()

    transformer = DiffusersProvider({"model": "tiny-random"}).load_pipeline().transformer
    private = tmp_path / "private"
    private.mkdir()
    shutil.copy(ray_project / "loras" / "alpha.safetensors", private / "hidden.safetensors")
    write_lora(private / "changing.safetensors", transformer, seed=5)
    shutil.copy(ray_project / "loras" / "alpha.safetensors", private / "replacement.safetensors")
    alpha_sha = sha256_file(private / "hidden.safetensors")
    hidden_fd, changing_fd = 900, 901
    driver_only(private / "hidden.safetensors", hidden_fd)
    driver_only(private / "changing.safetensors", changing_fd)
    project = tmp_path / "project"
    (project / "loras").mkdir(parents=True)
    (project / "loras" / "hidden.safetensors").symlink_to(f"/proc/self/fd/{hidden_fd}")
    (project / "loras" / "changing.safetensors").symlink_to(f"/proc/self/fd/{changing_fd}")
    shutil.copy(ray_project / "loras" / "beta.safetensors", project / "loras" / "beta.safetensors")
    (project / "loras.yaml").write_text("version: 1\nloras:\n" + "".join(
        f"  - id: {name}\n    name: {name.title()}\n    source: {{path: loras/{name}.safetensors}}\n"
        f"    kind: style\n    scale: {{recommended: 1.0, range: [0.0, 2.0]}}\n"
        for name in ("hidden", "beta", "changing")))
    cache = tmp_path / "worker-cache"
    (project / "ray.yaml").write_text((ray_project / "ray.yaml").read_text().replace(
        "threads_per_worker: 1", f"threads_per_worker: 1, lora_cache: '{cache}'").replace(
        "[alpha, beta]", "[hidden, beta, changing]"))
    out = tmp_path / "run"
    try:
        run = asyncio.create_task(run_suite_async(load_suite(project / "ray.yaml"), out, progress=False,
                                                  handle_sigint=False))
        while not (out / "run.db").exists() and not run.done():  # planned: every request named its sha256
            await asyncio.sleep(0.02)
        replacement = os.open(private / "replacement.safetensors", os.O_RDONLY)
        os.dup2(replacement, changing_fd)  # the user replaced the file; workers are still starting
        os.close(replacement)
        summary = await run
    finally:
        os.close(hidden_fd)
        os.close(changing_fd)

    changing_cells = 2 * 2 * 2  # 2 prompts x 2 seeds x 2 scales
    ps = summary.providers["diffusers"]
    assert ps.succeeded == CELLS and ps.failed == changing_cells and summary.exit_code == 1, summary
    assert _images_by_fingerprint(out) == _images_by_fingerprint(reference)  # same requests, same bytes
    shipped = str(cache / alpha_sha[:2] / f"{alpha_sha}.safetensors")
    beta = str(project / "loras" / "beta.safetensors")
    assert {f for files in _lora_files(out) for f in files} == {shipped, beta}  # beta read where it is
    assert {str(p) for p in cache.rglob("*") if p.is_file()} == {shipped}  # nothing of the changed file
    assert any("1 LoRA file(s)" in n and "ship_loras: auto" in n for n in summary.notes), summary.notes
    failures = _errors(out)
    assert len(failures) == changing_cells  # one line each, no image for any of them
    for _, kind, message in failures:
        assert kind == "lora_mismatch" and "\n" not in message, message
        assert "changing.safetensors" in message and "the file changed" in message and "not shipped" in message
