"""`lorascope run` with damaged data and hostile keys (issue 19): a missing or overwritten
stored image is restored from the shared cache or generated again (said, and counted), a
request refused on this machine is not counted as sent, and a malformed key stops the run
before anything is written or sent, never showing the key."""

from __future__ import annotations

import sqlite3

import pandas as pd
from typer.testing import CliRunner

from lorascope.cli import app
from lorascope.harness.errors import NotSent
from lorascope.harness.runner import run_suite_async
from lorascope.harness.store import image_problem
from lorascope.harness.suite import load_suite
from tests.fakes import TEST_KEY as KEY
from tests.helpers.harness_fakes import BASIC, FakeAsync, lookup

N_CELLS = (1 + 2 * 2) * 2 * 2


async def run(suite, out, **kw):
    return await run_suite_async(suite, out, provider_lookup=lookup, progress=False, handle_sigint=False, **kw)


def sends() -> int:
    return sum(1 for kind, _ in FakeAsync.calls if kind == "generate")


def _images(out):
    frame = pd.read_parquet(out / "results.parquet")
    return frame.sort_values("cell_id")[["image_path", "image_sha256"]].drop_duplicates().itertuples(index=False)


async def test_a_deleted_image_comes_back_from_the_cache_and_an_overwritten_one_is_generated_again(write_suite, tmp_path):
    suite = load_suite(write_suite(BASIC))
    out = tmp_path / "r"
    await run(suite, out)
    (deleted, _), (overwritten, _), *_ = _images(out)
    (out / deleted).unlink()
    # written in place: the run's file and the cache's are one hard-linked file, so both are
    # damaged and only the provider can give the picture back
    (out / overwritten).write_bytes(b"garbage")
    FakeAsync.calls.clear()

    dry = await run(suite, out, dry_run=True)
    ps = dry.providers["fakeasync"]
    assert (ps.stored, ps.in_cache, ps.to_send) == (N_CELLS - 2, 1, 1)
    assert any("2 stored image(s) missing or damaged" in n for n in dry.notes), dry.notes

    summary = await run(suite, out)
    ps = summary.providers["fakeasync"]
    assert (ps.reused, ps.sent, sends()) == (1, 1, 1) and summary.exit_code == 0
    assert ps.cost > 0  # the regenerated image is paid for, and counted
    note = next(n for n in summary.notes if "missing or damaged" in n)
    assert "1 restored from the shared cache" in note and "1 generated again (cost counted)" in note
    for rel, sha in _images(out):
        assert image_problem(out / rel, sha) is None, rel

    FakeAsync.calls.clear()
    again = await run(suite, out)
    assert sends() == 0 and again.providers["fakeasync"].stored == N_CELLS and not again.notes


async def test_a_request_refused_on_this_machine_is_not_counted_as_sent(write_suite, tmp_path, monkeypatch):
    async def refuse(self, request, on_submitted=None):
        raise NotSent(self.name, "Illegal header value (POST /x); nothing was sent")

    monkeypatch.setattr(FakeAsync, "generate", refuse)
    suite = load_suite(write_suite("name: n\nproviders: [fakeasync]\nprompts: [a cat]\nseeds: [1]\n"))
    summary = await run(suite, tmp_path / "r")
    ps = summary.providers["fakeasync"]
    assert (ps.sent, ps.not_sent, ps.failed) == (0, 1, 1) and summary.exit_code == 1
    with sqlite3.connect(tmp_path / "r" / "run.db") as conn:
        assert conn.execute("SELECT status, error_kind FROM generations").fetchall() == [("failed", "not_sent")]


def test_a_key_with_a_trailing_newline_stops_the_run_before_anything_is_written(project, tmp_path, monkeypatch,
                                                                                fake_factory=None):
    from tests.fakes import NovitaFake

    with NovitaFake(key=KEY) as fake:
        monkeypatch.setenv("NOVITA_API_KEY", KEY + "\n")
        monkeypatch.setenv("LORASCOPE_NOVITA_URL", fake.url)
        monkeypatch.chdir(project)
        (project / "s.yaml").write_text("name: k\nproviders: [novita]\nprompts: [a cat]\nseeds: [1]\nsize: 512x512\n")
        result = CliRunner().invoke(app, ["run", "s.yaml", "--out", str(tmp_path / "r"), "--no-progress"])
        assert fake.requests == []
    assert result.exit_code == 1, result.output
    assert "NOVITA_API_KEY" in result.output and KEY not in result.output
    assert not (tmp_path / "r").exists()


def test_the_dry_run_refuses_an_out_folder_the_real_run_would(project, tmp_path, monkeypatch):
    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.chdir(project)
    (project / "s.yaml").write_text("name: k\nproviders: [fal]\nprompts: [a cat]\nseeds: [1]\nsize: 512x512\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for args in (["--dry-run"], []):
        result = CliRunner().invoke(app, ["run", "s.yaml", "--out", str(blocker / "run"), "--no-progress", *args])
        assert result.exit_code == 1, result.output
        assert f"{blocker} is a file, not a folder" in " ".join(result.output.split()) or "Not a directory" in result.output


def test_a_key_written_in_the_suite_never_reaches_the_run_folder(project, tmp_path, monkeypatch):
    from tests.fakes import NovitaFake

    monkeypatch.delenv("NOVITA_API_KEY", raising=False)
    with NovitaFake(key=KEY) as fake:
        monkeypatch.chdir(project)
        (project / "s.yaml").write_text(
            "name: inline-key\nproviders:\n  - novita: {api_key: " + KEY + ", base_url: '" + fake.url + "'}\n"
            "prompts: [a cat]\nseeds: [1]\nsize: 512x512\n")
        result = CliRunner().invoke(app, ["run", "s.yaml", "--out", str(tmp_path / "r"), "--no-progress"])
        assert result.exit_code == 0, result.output
        assert len(fake.hits("submit")) == 1  # the key was used...
    for path in (tmp_path / "r").rglob("*"):  # ...and is in no file of the run folder
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in result.output
