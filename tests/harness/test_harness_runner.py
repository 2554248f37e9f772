"""The runner against in-process providers: what is sent, what lands on disk and in run.db."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3

import pandas as pd
import pytest

from lorascope.harness import store as store_mod
from lorascope.harness.results import export_results
from lorascope.harness.runner import GridInvalid, run_suite_async
from lorascope.harness.store import RunStore, StoreError, integrity_ok
from lorascope.harness.suite import SuiteError, load_suite
from tests.helpers.harness_fakes import BASIC, FakeAsync, FakeSync, lookup

N_CELLS = (1 + 2 * 2) * 2 * 2  # BASIC: (baseline + 2 LoRAs x 2 scales) x 2 prompts x 2 seeds


async def run(suite, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("handle_sigint", False)
    return await run_suite_async(suite, out, provider_lookup=lookup, **kw)


def sends(cls=FakeAsync) -> int:
    return sum(1 for kind, _ in cls.calls if kind == "generate")


async def test_full_run_stores_everything_and_rerun_sends_nothing(write_suite, tmp_path):
    suite = load_suite(write_suite(BASIC))
    out = tmp_path / "run1"
    summary = await run(suite, out)
    ps = summary.providers["fakeasync"]
    assert (ps.total, ps.sent, ps.succeeded, ps.failed) == (N_CELLS, N_CELLS, N_CELLS, 0)
    assert sends() == N_CELLS and summary.exit_code == 0
    assert ps.cost == pytest.approx(0.01 * N_CELLS)

    frame = pd.read_parquet(out / "results.parquet")
    for col in ("provider", "lora", "scale", "scales", "prompt_id", "prompt", "final_prompt", "seed", "status",
                "error", "image_path", "image_sha256", "width", "height", "latency_s", "cost_usd", "cost_source",
                "fingerprint", "cell_id", "options", "endpoint", "model_version", "task_id"):
        assert col in frame.columns, col
    assert len(frame) == N_CELLS and set(frame.status) == {"succeeded"}
    base = frame[frame.lora == ""]
    assert len(base) == 4 and base.scale.isna().all()
    painted = frame[frame.lora == "paint"]
    assert set(painted.prompt) == {"a cat on a mat", "a dog in fog"}
    assert all(fp.startswith("p41nt, ") for fp in painted.final_prompt)
    for row in frame.itertuples():
        data = (out / row.image_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.image_sha256
        assert row.image_path == f"images/{row.image_sha256[:2]}/{row.image_sha256}.png"
        assert (row.width, row.height) == (16, 16)
    assert integrity_ok(out / "run.db")
    assert not list(out.rglob("*.tmp"))

    FakeAsync.calls.clear()
    again = await run(suite, out)
    assert sends() == 0 and again.providers["fakeasync"].stored == N_CELLS and again.exit_code == 0

    # derived: delete and rebuild
    (out / "results.parquet").unlink()
    export_results(out)
    assert len(pd.read_parquet(out / "results.parquet")) == N_CELLS


async def test_store_api_for_later_stages(write_suite, tmp_path):
    suite = load_suite(write_suite(BASIC))
    await run(suite, tmp_path / "r")
    store = RunStore.open(tmp_path / "r")
    assert store.suite().name == "basic" and store.suite().text == suite.text
    entries = store.lora_entries()
    assert set(entries) == {"paint", "ink"} and entries["paint"].style_prompt == "an oil painting"
    conn = store.connect()
    conn.execute("CREATE TABLE IF NOT EXISTS scores (x)")
    conn.close()
    assert len(store.results_frame()) == N_CELLS
    with pytest.raises(StoreError):
        RunStore.open(tmp_path / "nothing-here")


async def test_shared_cache_reuses_across_run_folders_and_fresh_sends_again(write_suite, tmp_path):
    suite = load_suite(write_suite(BASIC))
    await run(suite, tmp_path / "a")
    FakeAsync.calls.clear()
    second = await run(suite, tmp_path / "b")
    assert sends() == 0 and second.providers["fakeasync"].reused == N_CELLS
    frame_a = pd.read_parquet(tmp_path / "a" / "results.parquet")
    frame_b = pd.read_parquet(tmp_path / "b" / "results.parquet")
    assert list(frame_a.image_sha256) == list(frame_b.image_sha256)
    assert all((tmp_path / "b" / p).is_file() for p in frame_b.image_path)

    fresh = await run(suite, tmp_path / "b", fresh=True)
    assert sends() == N_CELLS and fresh.providers["fakeasync"].sent == N_CELLS
    FakeAsync.calls.clear()
    # a finished fresh run is not repeated by a plain re-run
    await run(suite, tmp_path / "b")
    assert sends() == 0


async def test_unseeded_requests_are_not_reused_from_the_cache(write_suite, tmp_path):
    suite = load_suite(write_suite("name: u\nproviders: [fakeasync]\nprompts: [a cat]\nseeds: [null]\n"))
    await run(suite, tmp_path / "a")
    await run(suite, tmp_path / "b")
    assert sends() == 2
    frame = pd.read_parquet(tmp_path / "b" / "results.parquet")
    assert frame.seed.isna().all() and set(frame.status) == {"succeeded"}


async def test_invalid_grid_sends_nothing_and_lists_every_problem(write_suite, tmp_path):
    suite = load_suite(write_suite(
        "name: bad\nproviders:\n  - fakeasync\n  - fakesync\nloras: [paint]\nscales: [1.0, 3.0]\n"
        "prompts: [a cat]\nsize: 4096x64\n"
    ))
    with pytest.raises(GridInvalid) as info:
        await run(suite, tmp_path / "out")
    text = "\n".join(info.value.problems)
    assert "fakeasync: size 4096x64 above 2048" in text and "fakesync: size 4096x64 above 2048" in text
    assert "fakeasync: LoRA scale above 2" in text and "fakesync: LoRA scale above 2" in text
    assert sends(FakeAsync) == 0 and sends(FakeSync) == 0
    assert not (tmp_path / "out").exists()


async def test_dry_run_sends_nothing_and_counts_stored(write_suite, tmp_path):
    suite = load_suite(write_suite(BASIC))
    dry = await run(suite, tmp_path / "r", dry_run=True)
    ps = dry.providers["fakeasync"]
    assert (ps.total, ps.to_send, ps.stored) == (N_CELLS, N_CELLS, 0)
    assert ps.estimated_cost == pytest.approx(0.01 * N_CELLS)
    assert sends() == 0 and not (tmp_path / "r").exists()
    await run(suite, tmp_path / "r")
    dry = await run(suite, tmp_path / "r", dry_run=True)
    assert dry.providers["fakeasync"].stored == N_CELLS and dry.providers["fakeasync"].to_send == 0


async def test_dry_run_fresh_counts_what_a_fresh_run_would_send(write_suite, tmp_path):
    """`--fresh --dry-run` on a finished run: a fresh run asks for everything again, so the
    dry run must say so (and price it), not report it all as stored."""
    suite = load_suite(write_suite(BASIC))
    await run(suite, tmp_path / "r")
    FakeAsync.calls.clear()
    dry = await run(suite, tmp_path / "r", dry_run=True, fresh=True)
    ps = dry.providers["fakeasync"]
    assert (ps.stored, ps.in_cache, ps.to_send) == (0, 0, N_CELLS)
    assert ps.estimated_cost == pytest.approx(0.01 * N_CELLS)
    real = await run(suite, tmp_path / "r", fresh=True)
    assert real.providers["fakeasync"].sent == ps.to_send == sends()
    # a fresh run that stopped part-way: the dry run counts what is left of it
    FakeAsync.calls.clear()
    await run(suite, tmp_path / "r", fresh=True, max_cost=0.045, concurrency=1)
    dry = await run(suite, tmp_path / "r", dry_run=True, fresh=True)
    assert (dry.providers["fakeasync"].stored, dry.providers["fakeasync"].to_send) == (4, N_CELLS - 4)


async def test_failed_corrupt_and_garbage_cells_are_recorded_and_the_rest_goes_on(write_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(FakeAsync, "behaviours", {"cat": "corrupt", "dog": "garbage", "owl": "fail", "emu": "raise"})
    suite = load_suite(write_suite(
        "name: f\nproviders: [fakeasync]\nprompts: [a cat, a dog, an owl, an emu, a fox]\nseeds: [1]\n"
    ))
    summary = await run(suite, tmp_path / "r")
    ps = summary.providers["fakeasync"]
    assert (ps.succeeded, ps.failed) == (1, 4) and summary.exit_code == 1
    frame = pd.read_parquet(tmp_path / "r" / "results.parquet").set_index("prompt")
    assert frame.loc["a fox", "status"] == "succeeded"
    assert frame.loc["a cat", "status"] == "failed" and frame.loc["a cat", "error"].startswith("bad_response: image 0 does not decode")
    assert frame.loc["a dog", "error"] == "bad_response: malformed JSON from the provider"
    assert frame.loc["an owl", "error"].startswith("task_failed:")
    assert frame.loc["an emu", "error"].startswith("internal: KeyError")
    assert frame.loc["a cat", "image_path"] == ""
    # errors are not cached: a new folder asks again for the failed ones only
    monkeypatch.setattr(FakeAsync, "behaviours", {})
    FakeAsync.calls.clear()
    await run(suite, tmp_path / "r2")
    assert sends() == 4
    # and a re-run of the first folder retries its failed cells
    FakeAsync.calls.clear()
    retry = await run(suite, tmp_path / "r")
    assert retry.providers["fakeasync"].stored == 1 and retry.exit_code == 0


async def test_results_parquet_written_without_pandas_reads_back_as_pandas_writes_it(write_suite, tmp_path,
                                                                                     monkeypatch):
    """The run writes results.parquet with pyarrow alone (no pandas import); the file must be
    the one `results_frame().to_parquet()` writes: same column types, same pandas metadata,
    same frame when read back (failed rows: missing Int64/boolean values; the baseline's NaN
    scale; a column with no value at all)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(FakeAsync, "behaviours", {"cat": "corrupt", "dog": "fail"})
    suite = load_suite(write_suite(BASIC))
    await run(suite, tmp_path / "r")
    written = tmp_path / "r" / "results.parquet"
    with RunStore.open(tmp_path / "r") as store:
        expected = store.results_frame()
    assert set(expected.status) == {"failed"} and expected.width.isna().all() and expected.nsfw.isna().all()
    assert expected.scale.isna().any() and expected.init_image.isna().all()
    want = pa.Table.from_pandas(expected, preserve_index=False).schema
    got = pq.read_schema(written)
    assert got.equals(want, check_metadata=False)
    assert json.loads(got.metadata[b"pandas"]) == json.loads(want.metadata[b"pandas"])
    pd.testing.assert_frame_equal(pd.read_parquet(written), expected)

    monkeypatch.setattr(FakeAsync, "behaviours", {})
    await run(suite, tmp_path / "r")  # now every cell succeeds: widths, sha256s, no missing ints
    with RunStore.open(tmp_path / "r") as store:
        expected = store.results_frame()
    assert set(expected.status) == {"succeeded"}
    assert pq.read_schema(written).equals(pa.Table.from_pandas(expected, preserve_index=False).schema,
                                          check_metadata=False)
    pd.testing.assert_frame_equal(pd.read_parquet(written), expected)


async def test_max_cost_stops_submitting_before_passing(write_suite, tmp_path):
    suite = load_suite(write_suite(BASIC))
    summary = await run(suite, tmp_path / "r", max_cost=0.035, concurrency=1)
    ps = summary.providers["fakeasync"]
    assert sends() == 3 and ps.sent == 3 and ps.cost <= 0.035
    assert summary.budget_stopped and summary.exit_code == 1
    assert ps.not_sent == N_CELLS - 3
    # concurrency does not let in-flight requests pass the cap either
    FakeAsync.calls.clear()
    summary = await run(suite, tmp_path / "r2", max_cost=0.055, concurrency=8)
    assert sends() == 5 and summary.providers["fakeasync"].cost <= 0.055 + 1e-9


async def test_max_cost_with_a_provider_that_publishes_no_price(write_suite, tmp_path, monkeypatch):
    """No estimate: one probe request at a time learns the billed price, then the cap holds
    with it; with no headroom at all, nothing of unknown price is sent."""
    from lorascope.harness.models import Cost, Estimate

    monkeypatch.setattr(FakeAsync, "estimate", lambda self, request: Estimate(cost=Cost(usd=None, source="unknown"),
                                                                              seconds=1.0))
    suite = load_suite(write_suite(BASIC))
    nothing = await run(suite, tmp_path / "r0", max_cost=0.0)
    assert sends() == 0 and nothing.budget_stopped
    assert any("the next request has no published price" in note for note in nothing.notes), nothing.notes
    capped = await run(suite, tmp_path / "r1", max_cost=0.035, concurrency=4)
    ps = capped.providers["fakeasync"]
    assert sends() == 3 and ps.cost == pytest.approx(0.03) and capped.budget_stopped


async def test_unwritable_output_folder_is_a_clear_error(write_suite, tmp_path):
    suite = load_suite(write_suite(BASIC))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as info:
        await run(suite, blocker / "run")
    assert "cannot use run folder" in str(info.value)
    assert sends() == 0
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(StoreError):
            await run(suite, ro / "run")


async def test_full_disk_stops_the_run_keeps_the_task_id_and_run_db_intact(write_suite, tmp_path, monkeypatch):
    suite = load_suite(write_suite(BASIC))
    real = store_mod.atomic_write
    writes = {"n": 0}

    def flaky(path, data):
        writes["n"] += 1
        if writes["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write", flaky)
    summary = await run(suite, tmp_path / "r", concurrency=1)
    assert summary.fatal and "No space left on device" in summary.fatal and summary.exit_code == 1
    assert integrity_ok(tmp_path / "r" / "run.db")
    conn = sqlite3.connect(tmp_path / "r" / "run.db")
    kinds = conn.execute("SELECT error_kind, task_id FROM generations WHERE status = 'failed'").fetchall()
    assert kinds and all(k == "storage" and t for k, t in kinds)
    sent_before = sends()
    assert sent_before < N_CELLS  # it stopped submitting

    monkeypatch.setattr(store_mod, "atomic_write", real)
    FakeAsync.calls.clear()
    resumed = await run(suite, tmp_path / "r")
    ps = resumed.providers["fakeasync"]
    assert ps.resumed == len(kinds)  # paid images fetched again by task id, not re-sent
    assert sends() == N_CELLS - sent_before and resumed.exit_code == 0


async def test_crash_leftovers_async_resumes_by_id_sync_resends_and_says_so(write_suite, tmp_path):
    """A SIGKILL leaves rows at `intent`/`submitted`; simulate each kind and resume."""
    suite = load_suite(write_suite(
        "name: crash\nproviders: [fakeasync, fakesync]\nprompts: [a cat, a dog, an owl]\nseeds: [1]\n"
    ))
    out = tmp_path / "r"
    await run(suite, out, dry_run=False, max_cost=0.0)  # records the grid, sends nothing
    assert sends(FakeAsync) == sends(FakeSync) == 0
    store = RunStore.open(out)
    cells = store.connect().execute("SELECT provider, prompt, fingerprint FROM cells").fetchall()
    fp = {(p, t): f for p, t, f in cells}
    epoch = store.begin_epoch(False)
    g1 = store.record_intent(fp[("fakeasync", "a cat")], "fakeasync", epoch, 1, 0.01)
    store.record_submitted(g1, "task-known")
    store.record_intent(fp[("fakeasync", "a dog")], "fakeasync", epoch, 1, 0.01)  # no task id came back
    store.record_intent(fp[("fakesync", "a cat")], "fakesync", epoch, 1, 0.01)
    store.close()

    summary = await run(suite, out)
    a, s = summary.providers["fakeasync"], summary.providers["fakesync"]
    assert ("resume", "task-known") in FakeAsync.calls
    assert a.resumed == 1 and a.resent_after_crash == 1 and a.unconfirmed_submits == 1 and a.sent == 2
    assert s.resent_after_crash == 1 and s.sent == 3 and s.resumed == 0
    prompts_sent = [r.prompt for kind, r in FakeAsync.calls if kind == "generate"]
    assert "a cat" not in prompts_sent  # never submitted twice
    frame = pd.read_parquet(out / "results.parquet")
    assert set(frame.status) == {"succeeded"}
    rows = sqlite3.connect(out / "run.db").execute(
        "SELECT COUNT(*) FROM generations WHERE error_kind = 'interrupted'").fetchone()
    assert rows[0] == 2


async def test_write_ahead_intent_before_sending_task_id_the_moment_it_comes_back(write_suite, tmp_path, monkeypatch):
    """What another process would read in run.db at each step of one async generation: the
    intent is committed before the request leaves, the task id as soon as the provider
    accepts it (before any polling), the result only at the end."""
    out = tmp_path / "r"
    seen: list[tuple[str, tuple]] = []

    def row_for(request) -> tuple:
        conn = sqlite3.connect(out / "run.db")  # a separate connection: sees committed data only
        try:
            return conn.execute(
                "SELECT g.status, g.task_id FROM generations g JOIN cells c ON c.fingerprint = g.fingerprint"
                " WHERE c.final_prompt = ? AND c.seed = ? ORDER BY g.id DESC LIMIT 1",
                (request.prompt, request.seed),
            ).fetchone()
        finally:
            conn.close()

    async def observed(self, request, on_submitted=None):
        seen.append(("before send", row_for(request)))
        task_id = f"task-{request.prompt}-{request.seed}"
        await on_submitted(task_id)
        seen.append(("accepted", row_for(request)))
        return self._result(request, task_id)

    monkeypatch.setattr(FakeAsync, "generate", observed)
    suite = load_suite(write_suite("name: wal\nproviders: [fakeasync]\nprompts: [a cat, a dog]\nseeds: [1, 2]\n"))
    summary = await run(suite, out, concurrency=2)
    assert summary.providers["fakeasync"].succeeded == 4
    assert [step for step, _ in seen].count("before send") == 4
    for step, row in seen:
        if step == "before send":
            assert row == ("intent", None)
        else:
            assert row[0] == "submitted" and row[1].startswith("task-")
    stored = sqlite3.connect(out / "run.db").execute("SELECT status, task_id FROM generations").fetchall()
    assert sorted(stored) == sorted(("succeeded", row[1]) for step, row in seen if step == "accepted")


async def test_a_task_whose_polling_gave_up_is_collected_by_id_on_rerun_not_paid_again(write_suite, tmp_path,
                                                                                       monkeypatch):
    """The provider accepted the tasks, then polling failed on a transient error: the tasks
    ran on (and were billed), so a re-run asks for them by id instead of submitting again.
    A task the provider itself says failed is sent again."""
    from lorascope.harness.errors import ProviderUnavailable, TaskFailed

    original = FakeAsync.generate

    async def accepted_then_lost(self, request, on_submitted=None):
        self.calls.append(("generate", request))
        await on_submitted(f"task-{request.prompt}")
        if "owl" in request.prompt:
            raise TaskFailed(self.name, "the provider says the task failed")
        raise ProviderUnavailable(self.name, "status polling: connection reset; retry budget spent")

    monkeypatch.setattr(FakeAsync, "generate", accepted_then_lost)
    suite = load_suite(write_suite("name: lost\nproviders: [fakeasync]\nprompts: [a cat, a dog, an owl]\n"))
    first = await run(suite, tmp_path / "r")
    assert first.providers["fakeasync"].failed == 3 and sends() == 3

    monkeypatch.setattr(FakeAsync, "generate", original)
    FakeAsync.calls.clear()
    second = await run(suite, tmp_path / "r")
    ps = second.providers["fakeasync"]
    assert sorted(arg for kind, arg in FakeAsync.calls if kind == "resume") == ["task-a cat", "task-a dog"]
    assert [r.prompt for kind, r in FakeAsync.calls if kind == "generate"] == ["an owl"]
    assert (ps.resumed, ps.sent, ps.succeeded, ps.resent_after_crash) == (2, 1, 3, 0) and second.exit_code == 0


async def test_a_task_that_cannot_be_collected_is_tried_once_then_sent_again(write_suite, tmp_path, monkeypatch):
    """Polling gave up; on the re-run the status endpoint still fails for that task id (an
    expired task, a provider outage): the next run asks anew instead of blocking the cell."""
    from lorascope.harness.errors import ProviderUnavailable

    original = FakeAsync.generate

    async def accepted_then_lost(self, request, on_submitted=None):
        self.calls.append(("generate", request))
        await on_submitted("task-lost")
        raise ProviderUnavailable(self.name, "status polling: 503; retry budget spent")

    async def still_lost(self, task_id, request):
        self.calls.append(("resume", task_id))
        raise ProviderUnavailable(self.name, "status polling: 503; retry budget spent")

    monkeypatch.setattr(FakeAsync, "generate", accepted_then_lost)
    monkeypatch.setattr(FakeAsync, "resume", still_lost)
    suite = load_suite(write_suite("name: gone\nproviders: [fakeasync]\nprompts: [a cat]\n"))
    await run(suite, tmp_path / "r")
    FakeAsync.calls.clear()
    second = await run(suite, tmp_path / "r")
    assert FakeAsync.calls == [("resume", "task-lost")] and second.exit_code == 1
    monkeypatch.setattr(FakeAsync, "generate", original)
    FakeAsync.calls.clear()
    third = await run(suite, tmp_path / "r")
    assert [kind for kind, _ in FakeAsync.calls] == ["generate"] and third.exit_code == 0


async def test_ctrl_c_in_process_records_in_flight_requests_and_the_rerun_counts_them(write_suite, tmp_path,
                                                                                      monkeypatch):
    """SIGINT while two requests are in flight at a synchronous provider: both recorded as
    interrupted, nothing more submitted, exit 130; the re-run sends them again and says so."""
    import asyncio
    import signal

    original = FakeSync.generate

    async def slow(self, request, on_submitted=None):
        self.calls.append(("generate", request))
        if sends(FakeSync) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(30)
        raise AssertionError("should have been cancelled")

    monkeypatch.setattr(FakeSync, "generate", slow)
    suite = load_suite(write_suite("name: stop\nproviders:\n  - fakesync: {concurrency: 2}\nprompts: [a, b, c, d]\n"))
    stopped = await run(suite, tmp_path / "r", handle_sigint=True)
    ps = stopped.providers["fakesync"]
    assert stopped.interrupted and stopped.exit_code == 130
    assert sends(FakeSync) == 2 and ps.not_sent == 2
    rows = sqlite3.connect(tmp_path / "r" / "run.db").execute("SELECT status, error_kind FROM generations").fetchall()
    assert rows == [("failed", "interrupted")] * 2
    assert integrity_ok(tmp_path / "r" / "run.db")

    monkeypatch.setattr(FakeSync, "generate", original)
    FakeSync.calls.clear()
    again = await run(suite, tmp_path / "r")
    ps = again.providers["fakesync"]
    assert sends(FakeSync) == 4 and ps.resent_after_crash == 2 and again.exit_code == 0


async def test_ctrl_c_while_a_batch_waits_for_the_rate_limit_sends_nothing_more(write_suite, tmp_path):
    """A batching provider (like the local one) under an rpm limit: Ctrl-C lands while the
    second batch waits for its slot; that batch is never sent."""
    import asyncio
    import signal

    batches: list[list[int]] = []

    class FakeBatch(FakeSync):
        name = "fakebatch"
        batch_seeds = True

        async def generate_batch(self, requests):
            batches.append([r.seed for r in requests])
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(30)
            raise AssertionError("should have been cancelled")

    suite = load_suite(write_suite(
        "name: batch\nproviders:\n  - fakebatch: {concurrency: 2, rpm: 60}\nprompts: [a cat, a dog]\nseeds: [1, 2]\n"
    ))
    summary = await run_suite_async(suite, tmp_path / "r", provider_lookup=lambda name: FakeBatch, progress=False,
                                    handle_sigint=True)
    assert summary.interrupted and batches == [[1, 2]]
    assert summary.providers["fakebatch"].not_sent == 2
    rows = sqlite3.connect(tmp_path / "r" / "run.db").execute("SELECT status, error_kind FROM generations").fetchall()
    assert rows == [("failed", "interrupted")] * 2  # only the batch that was sent


async def test_duplicate_requests_share_one_generation(write_suite, tmp_path):
    suite = load_suite(write_suite(
        "name: dup\nproviders: [fakeasync]\nprompts:\n  - {id: one, text: a cat}\n  - {id: two, text: a cat}\n"
    ))
    summary = await run(suite, tmp_path / "r")
    assert sends() == 1 and summary.providers["fakeasync"].total == 2
    frame = pd.read_parquet(tmp_path / "r" / "results.parquet")
    assert list(frame.prompt_id) == ["one", "two"] and frame.image_sha256.nunique() == 1


async def test_concurrency_bounds_requests_in_flight_per_provider(write_suite, tmp_path, monkeypatch):
    import asyncio

    in_flight = {"now": 0, "max": 0}
    original = FakeAsync.generate

    async def counted(self, request, on_submitted=None):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            await asyncio.sleep(0.02)
            return await original(self, request, on_submitted)
        finally:
            in_flight["now"] -= 1

    monkeypatch.setattr(FakeAsync, "generate", counted)
    prompts = ", ".join(f"prompt {i}" for i in range(12))
    suite = load_suite(write_suite(f"name: conc\nproviders:\n  - fakeasync: {{concurrency: 3}}\nprompts: [{prompts}]\n"))
    summary = await run(suite, tmp_path / "r")
    assert summary.providers["fakeasync"].succeeded == 12 and in_flight["max"] == 3
    in_flight["max"] = 0
    await run(suite, tmp_path / "r2", concurrency=5, fresh=True)  # --concurrency overrides the suite
    assert in_flight["max"] == 5
    mode = sqlite3.connect(tmp_path / "r" / "run.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_rpm_limit_spaces_submissions(write_suite, tmp_path):
    import time

    suite = load_suite(write_suite("name: rpm\nproviders:\n  - fakeasync: {rpm: 600}\nprompts: [a, b, c, d]\n"))
    t0 = time.monotonic()
    await run(suite, tmp_path / "r")
    assert time.monotonic() - t0 >= 0.3  # 4 requests at 10/s: 3 gaps of 0.1 s


async def test_progress_bar_shows_done_total_failures_and_cost(write_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(FakeAsync, "behaviours", {"dog": "fail"})
    suite = load_suite(write_suite(BASIC))
    await run_suite_async(suite, tmp_path / "r", provider_lookup=lookup, progress=True, handle_sigint=False)
    err = capsys.readouterr().err
    assert "fakeasync" in err
    assert f"{N_CELLS}/{N_CELLS}" in err
    assert f"failed {N_CELLS // 2}" in err  # the dog prompt's cells
    assert f"${0.01 * N_CELLS / 2:.4f}" in err  # billed: the cat prompt's cells


async def test_progress_bar_cost_matches_the_summary_and_shows_an_eta(write_suite, tmp_path, capsys, monkeypatch):
    """A billed result whose image does not decode is a failed cell that still cost money:
    the bar's cost so far says what the summary says."""
    monkeypatch.setattr(FakeAsync, "behaviours", {"dog": "corrupt"})
    suite = load_suite(write_suite(BASIC))
    summary = await run_suite_async(suite, tmp_path / "r", provider_lookup=lookup, progress=True, handle_sigint=False)
    err = capsys.readouterr().err
    ps = summary.providers["fakeasync"]
    assert ps.failed == N_CELLS // 2 and ps.cost == pytest.approx(0.01 * N_CELLS)
    assert f"failed {N_CELLS // 2}" in err
    assert f"${ps.cost:.4f}" in err
    assert "0:00:00" in err  # the ETA column, at the end of the run


async def test_memory_stays_flat_image_bytes_go_to_disk(write_suite, tmp_path, monkeypatch):
    """120 generations of ~190 KB each: peak traced memory stays far below their sum."""
    import io
    import tracemalloc

    import numpy as np
    from PIL import Image

    from lorascope.harness.models import Cost, GeneratedImage, GenerationResult, Timings

    async def big(self, request, on_submitted=None):
        rng = np.random.default_rng(abs(hash((request.prompt, request.seed))) % 2**32)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=0)
        return GenerationResult(provider=self.name, images=[GeneratedImage(data=buf.getvalue(), format="png",
                                width=256, height=256)], seed=request.seed, timings=Timings(total_s=0.001),
                                cost=Cost(usd=0.0, source="free"))

    monkeypatch.setattr(FakeAsync, "generate", big)
    prompts = ", ".join(f"prompt {i}" for i in range(12))
    suite = load_suite(write_suite(f"name: mem\nproviders: [fakeasync]\nprompts: [{prompts}]\nseeds: {list(range(10))}\n"))
    tracemalloc.start()
    try:
        summary = await run(suite, tmp_path / "r", concurrency=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    sizes = [p.stat().st_size for p in (tmp_path / "r" / "images").rglob("*.png")]
    assert summary.providers["fakeasync"].succeeded == 120 and len(sizes) == 120
    assert peak < sum(sizes) / 4, (peak, sum(sizes))


async def test_a_fresh_run_that_stopped_resumes_instead_of_starting_over(write_suite, tmp_path):
    suite = load_suite(write_suite(BASIC))
    await run(suite, tmp_path / "r")
    FakeAsync.calls.clear()
    stopped = await run(suite, tmp_path / "r", fresh=True, max_cost=0.045, concurrency=1)
    assert stopped.budget_stopped and sends() == 4
    FakeAsync.calls.clear()
    resumed = await run(suite, tmp_path / "r", fresh=True)
    assert sends() == N_CELLS - 4 and resumed.providers["fakeasync"].stored == 4
    FakeAsync.calls.clear()
    again = await run(suite, tmp_path / "r", fresh=True)  # the fresh run finished: a new one asks again
    assert sends() == N_CELLS and again.exit_code == 0


async def test_providers_option_runs_a_subset_and_rejects_unknown_names(write_suite, tmp_path):
    suite = load_suite(write_suite("name: two\nproviders: [fakeasync, fakesync]\nprompts: [a cat]\n"))
    summary = await run(suite, tmp_path / "r", providers=["fakesync"])
    assert list(summary.providers) == ["fakesync"] and sends(FakeSync) == 1 and sends(FakeAsync) == 0
    with pytest.raises(SuiteError) as info:
        await run(suite, tmp_path / "r", providers=["fal"])
    assert "--providers names 'fal', which the suite does not list" in info.value.problems[0]


async def test_out_pointing_at_another_suites_run_is_refused_and_changes_nothing(write_suite, tmp_path):
    out = tmp_path / "shared-out"
    await run(load_suite(write_suite(BASIC)), out)
    files = lambda: sorted(p.name for p in out.rglob("*") if not p.name.endswith(("-wal", "-shm")))  # noqa: E731
    before = files()
    other = load_suite(write_suite(BASIC.replace("name: basic", "name: other"), name="other.yaml"))
    FakeAsync.calls.clear()
    for dry_run in (True, False):
        with pytest.raises(StoreError, match="holds a run of suite 'basic', not 'other'"):
            await run(other, out, dry_run=dry_run)
    assert sends() == 0 and files() == before
    with RunStore.open(out) as store:
        assert store.suite().name == "basic"


def test_shared_cache_group_commits_its_rows_and_every_read_and_close_sees_them(tmp_path, monkeypatch):
    """`SharedCache.put` commits in groups (a mirror of what run.db already holds): a row is
    in cache.db after PUT_BATCH puts or at close, and a read through the same cache flushes
    first, so a run never misses what it put itself."""
    from lorascope.harness.models import Cost, GenerationResult, Timings
    from lorascope.harness.store import SharedCache, StoredImage, write_image

    monkeypatch.setattr(SharedCache, "PUT_BATCH", 3)
    run_dir = tmp_path / "run"
    cache = SharedCache(tmp_path / "cache")

    def put(i: int) -> None:
        sha, rel = write_image(run_dir, f"image {i}".encode(), "png")
        result = GenerationResult(provider="fake", images=[], seed=i, timings=Timings(total_s=1.0),
                                  cost=Cost(usd=0.01, source="billed"))
        cache.put(f"fp{i}", "fake", result, [StoredImage(sha, rel, "png", 1, 1)], run_dir)

    def committed() -> set[str]:  # what another process sees
        with sqlite3.connect(tmp_path / "cache" / "cache.db") as other:
            return {r[0] for r in other.execute("SELECT fingerprint FROM generations")}

    for i in range(4):
        put(i)
    assert committed() == {"fp0", "fp1", "fp2"}  # one group of 3; fp3 waits
    assert (tmp_path / "cache" / "images").is_dir()
    assert cache.lookup_many(["fp3", "fp9"]) == {"fp3"}  # a read flushes first
    assert committed() == {"fp0", "fp1", "fp2", "fp3"}
    put(4)
    cache.close()
    assert committed() == {f"fp{i}" for i in range(5)}
    again = SharedCache(tmp_path / "cache")
    found = again.get("fp4")
    assert found is not None and found[0]["seed"] == 4
    again.close()
