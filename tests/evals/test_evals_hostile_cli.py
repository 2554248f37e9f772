"""The `lorascope` command never shows a traceback for damaged or hostile input (issue 19):
a garbage or truncated run.db, an unwritable report path, `recommend --write` into an
unparsable catalogue each end in one line naming the file and the fix, exit 1."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from lorascope.cli import main


def lorascope(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["lorascope", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    return info.value.code, out.out + out.err


def _one_line_error(text: str) -> str:
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def broken_runs(tmp_path, tiny_run):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "run.db").write_bytes(b"\x00not sqlite at all\xff" * 300)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    data = (tiny_run / "run.db").read_bytes()
    (truncated / "run.db").write_bytes(data[: len(data) // 3])
    return {"garbage": garbage, "truncated": truncated}


@pytest.mark.parametrize("command", [
    ["score", "{run}", "--clip", "tiny-random", "--no-progress"],
    ["recommend", "{run}"],
    ["report", "{run}"],
    ["compare", "{run}", "{run}", "--clip", "tiny-random", "--no-progress"],
])
@pytest.mark.parametrize("which", ["garbage", "truncated"])
def test_a_damaged_run_db_is_one_line_with_the_fix(broken_runs, capsys, monkeypatch, command, which):
    run = broken_runs[which]
    code, text = lorascope(capsys, monkeypatch, *[part.format(run=run) for part in command])
    assert code in (1, 2), text
    line = _one_line_error(text)
    assert "run.db" in line and str(run) in line, line


def test_an_unwritable_report_path_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "a-folder.html"
    folder.mkdir()
    for target in (folder, tmp_path / "plain" / "x.html"):
        if target.parent.name == "plain":
            (tmp_path / "plain").write_text("a file, not a folder")
        code, text = lorascope(capsys, monkeypatch, "report", str(tiny_run), "-o", str(target))
        assert code == 1, text
        line = _one_line_error(text)
        assert str(target) in line or str(target.parent) in line, line


def test_recommend_write_into_an_unparsable_catalogue_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    code, text = lorascope(capsys, monkeypatch, "score", str(tiny_run), "--clip", "tiny-random", "--no-progress")
    assert code in (0, None), text
    broken = tmp_path / "loras.yaml"
    broken.write_text("version: 1\nloras: [\n  - id: x\n")
    before = broken.read_bytes()
    code, text = lorascope(capsys, monkeypatch, "recommend", str(tiny_run), "--write", "--catalogue", str(broken))
    assert code in (1, 2), text
    assert "Traceback" not in text and str(broken) in " ".join(text.split())
    assert broken.read_bytes() == before


def test_an_unexpected_error_is_one_line_without_the_key(capsys, monkeypatch):
    from lorascope.harness import secrets
    from lorascope.harness import cli_errors

    secrets.register("zz-net-key-123456")

    def boom():
        raise RuntimeError("header 'Bearer zz-net-key-123456' refused \x1b[31m")

    monkeypatch.setattr(sys, "argv", ["lorascope"])
    with pytest.raises(SystemExit) as info:
        cli_errors.run_guarded(boom)
    err = capsys.readouterr().err
    assert info.value.code == 1 and "zz-net-key" not in err and "\x1b" not in err
    assert err.startswith("error: RuntimeError:") and "LORASCOPE_TRACEBACK=1" in err
