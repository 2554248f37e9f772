"""`lorascope registry ...` as a user sees it: output, exit codes, files written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from registry_builders import (
    FakeHub,
    lora_tensors,
    sdxl_tensors,
    sha256_bytes,
    write_safetensors,
)
from typer.testing import CliRunner

from lorascope.registry.catalogue import PROJECT_CATALOGUE, load_catalogue
from lorascope.registry.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

SMALL = """\
# my catalogue: keep this comment
version: 1
loras:
  # first LoRA, a comment that must survive `add`
  - id: ink
    name: Ink
    source: {repo: owner/ink, file: ink.safetensors}
    kind: style
    triggers: [inkk]
    scale: {recommended: 0.7, range: [0.5, 1.0]}
    tags: [mono]
    provenance:
      triggers: {source: model card, confirmed: true}
  - id: portrait
    name: Portrait
    source: {path: weights/portrait.safetensors}
    kind: character
    scale: {recommended: 1.0, range: [0.5, 1.5]}
    tags: [people]
"""


def run(*args: str) -> "object":
    return runner.invoke(app, list(args))


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "loras.yaml"
    path.write_text(SMALL, encoding="utf-8")
    return path


def test_list_shipped_catalogue_marks_unconfirmed() -> None:
    result = runner.invoke(app, ["list", "--catalogue", str(PROJECT_CATALOGUE)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for entry_id in ("classic-painting", "coloring-book", "pencil-sketch"):
        assert entry_id in result.stdout
    n = len(load_catalogue(PROJECT_CATALOGUE).entries)
    assert "class1cpa1nt~" in result.stdout and f"{n} of {n} LoRAs" in result.stdout
    assert "~ = secondary" in result.stdout and "? = unverified" in result.stdout
    classic = next(line for line in result.stdout.splitlines() if "classic-painting" in line)
    assert "4~ 1?" in classic  # source, kind, triggers, scale secondary; the style prompt lorascope's


def test_list_filters_and_confirmed_marks(small: Path) -> None:
    result = runner.invoke(app, ["list", "-c", str(small), "--tag", "mono"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "ink" in result.stdout and "portrait" not in result.stdout and "1 of 2" in result.stdout
    assert "inkk " in result.stdout and "inkk?" not in result.stdout  # confirmed trigger: no mark
    result = runner.invoke(app, ["list", "-c", str(small), "--kind", "character"], env={"COLUMNS": "200"})
    assert "portrait" in result.stdout and "│ ink" not in result.stdout
    result = run("list", "-c", str(small), "--kind", "painting")
    assert result.exit_code == 2 and "--kind must be one of" in result.stderr


def test_show(small: Path) -> None:
    result = runner.invoke(app, ["show", "ink", "-c", str(small)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "https://huggingface.co/owner/ink/resolve/main/ink.safetensors" in result.stdout
    assert "confirmed — model card" in result.stdout
    assert f"{small}:5" in result.stdout
    result = run("show", "inq", "-c", str(small))
    assert result.exit_code == 2 and "did you mean 'ink'" in result.stderr


def test_validate_exit_codes(small: Path, tmp_path: Path) -> None:
    ok = run("validate", str(small))
    assert ok.exit_code == 0 and "OK" in ok.stdout and "2 valid entries" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.replace("kind: style", "kind: stlye").replace("tags: [people]", "tagz: [people]"))
    result = run("validate", str(bad))
    assert result.exit_code == 1
    assert "bad.yaml:8: entry 'ink', field 'kind'" in result.stdout
    assert "bad.yaml:19: entry 'portrait', field 'tagz': unknown key 'tagz'; did you mean 'tags'?" in result.stdout
    assert "2 error(s)" in result.stdout
    warn = tmp_path / "warn.yaml"
    warn.write_text(SMALL.replace("tags: [mono]", "style_prompt: " + " ".join(["hyperrealistic"] * 30) + "\n    tags: [mono]"))
    result = run("validate", str(warn))
    assert result.exit_code == 0 and "warning:" in result.stdout and "1 warning(s)" in result.stdout
    missing = run("validate", str(tmp_path / "none.yaml"))
    assert missing.exit_code == 2 and "not found" in missing.stderr
    # other commands refuse an invalid catalogue with every problem listed
    result = run("list", "-c", str(bad))
    assert result.exit_code == 1 and "field 'kind'" in result.stderr and "field 'tagz'" in result.stderr


def test_inspect_file_text_and_json(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "k.safetensors", lora_tensors("kohya"), metadata={"ss_network_dim": "4"})
    result = run("inspect", str(path))
    # the tiny-model LoRA does not fit the real Turbo: a check failed -> exit 1, verdict shown
    assert result.exit_code == 1
    assert "kohya" in result.stdout and "incompatible: shape mismatch" in result.stdout
    result = run("inspect", str(path), "--json")
    data = json.loads(result.stdout)
    assert data["key_format"] == "kohya" and data["ranks"] == [4] and data["sha256"] == sha256_bytes(path.read_bytes())
    assert data["compatibility"]["verdict"] == "incompatible" and data["metadata"] == {"ss_network_dim": "4"}


def test_inspect_other_family_and_bad_inputs(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "sdxl.safetensors", sdxl_tensors())
    result = run("inspect", str(path))
    assert result.exit_code == 1 and "made for SDXL" in result.stdout
    pkl = tmp_path / "model.ckpt"
    pkl.write_bytes(b"\x80\x04K\x01.")
    result = run("inspect", str(pkl))
    assert result.exit_code == 1 and "pickle" in result.stderr
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x80\x04K\x01." * 4)
    result = run("inspect", str(fake))
    assert result.exit_code == 1 and "pickle" in result.stderr
    result = run("inspect", str(tmp_path / "missing.safetensors"))
    assert result.exit_code == 2


def test_inspect_catalogue_entries(small: Path, tmp_path: Path, fake_hub: FakeHub) -> None:
    (tmp_path / "weights").mkdir()
    write_safetensors(tmp_path / "weights" / "portrait.safetensors", lora_tensors("diffusers"))
    result = run("inspect", "portrait", "-c", str(small), "--json")
    assert json.loads(result.stdout)["key_format"] == "diffusers"
    data = write_safetensors(tmp_path / "ink.safetensors", lora_tensors("ai-toolkit")).read_bytes()
    fake_hub.add_file("owner/ink", "ink.safetensors", data)
    result = run("inspect", "ink", "-c", str(small), "--json")
    assert json.loads(result.stdout)["key_format"] == "ai-toolkit", result.output
    file_requests = [r for r in fake_hub.server.requests if "/resolve/" in r["path"]]
    # header only: range GETs, never a whole-file download
    assert file_requests and all(
        r["method"] == "GET" and {k.lower(): v for k, v in r["headers"].items()}["range"].startswith("bytes=")
        for r in file_requests
    )
    result = run("inspect", "owner/ink:ink.safetensors", "--json")
    assert json.loads(result.stdout)["source"] == "owner/ink/ink.safetensors@main"
    # once resolved into the HF cache, inspecting the entry needs no network and gives the sha256
    from lorascope.registry.resolve import resolve

    resolved = resolve(load_catalogue(small).get("ink"))
    fake_hub.server.requests.clear()
    result = runner.invoke(app, ["inspect", "ink", "-c", str(small), "--json"], env={"HF_HUB_OFFLINE": "1"})
    assert json.loads(result.stdout)["sha256"] == sha256_bytes(data) == resolved.sha256
    assert fake_hub.server.requests == []


def test_inspect_unreachable_hub_says_what_to_do(small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    result = runner.invoke(app, ["inspect", "ink", "-c", str(small)], env={"HF_ENDPOINT": closed})
    assert result.exit_code == 1
    assert f"the Hugging Face Hub ({closed}) cannot be reached" in result.output
    assert "inspect a downloaded file by its path" in result.output and "Traceback" not in result.output


def test_add_appends_entry_keeping_comments(small: Path, tmp_path: Path, fake_hub: FakeHub) -> None:
    data = write_safetensors(tmp_path / "w.safetensors", lora_tensors("kohya"),
                             metadata={"trigger_word": "w4tercolor, soft wash"}).read_bytes()
    commit = fake_hub.add_file("someone/Watercolor-Z-Image-Turbo", "watercolor_v1.safetensors", data,
                               card={"license": "apache-2.0"})
    fake_hub.add_file("someone/Watercolor-Z-Image-Turbo", "README.md", b"# card")
    before = small.read_text()
    # the tiny-model LoRA does not fit the real Turbo: refused unless forced
    refused = run("add", "someone/Watercolor-Z-Image-Turbo", "-c", str(small))
    assert refused.exit_code == 1 and "not a Z-Image Turbo LoRA: shape mismatch" in refused.stderr
    assert small.read_text() == before
    result = run("add", "someone/Watercolor-Z-Image-Turbo", "-c", str(small), "--force")
    assert result.exit_code == 0, result.output
    assert "added watercolor-z-image-turbo" in result.stdout
    after = small.read_text()
    assert after.startswith(before)  # comments, order and existing entries untouched
    assert "# first LoRA, a comment that must survive `add`" in after
    cat = load_catalogue(small)
    new = cat.get("watercolor-z-image-turbo")
    assert new.source.repo == "someone/Watercolor-Z-Image-Turbo" and new.source.file == "watercolor_v1.safetensors"
    assert new.source.revision == commit and new.source.sha256 == sha256_bytes(data)
    assert new.triggers == ["w4tercolor", "soft wash"] and new.is_confirmed("triggers")
    assert new.license == "apache-2.0" and new.is_confirmed("license") and new.is_confirmed("source")
    assert not new.is_confirmed("kind") and not new.is_confirmed("scale")
    assert "kohya format, rank 4" in (new.notes or "")
    # adding the same id again is refused, the file unchanged
    again = run("add", "someone/Watercolor-Z-Image-Turbo", "-c", str(small), "--force")
    assert again.exit_code == 1 and "already has an entry" in again.stderr and small.read_text() == after


def turbo_shaped_lora() -> dict:
    """A rank-1 LoRA on two real Z-Image Turbo modules: the real shapes, a tiny file."""
    import numpy as np

    return {
        "transformer.layers.0.attention.to_q.lora_A.weight": np.zeros((1, 3840), np.float16),
        "transformer.layers.0.attention.to_q.lora_B.weight": np.zeros((3840, 1), np.float16),
        "transformer.layers.0.feed_forward.w1.lora_A.weight": np.zeros((1, 3840), np.float16),
        "transformer.layers.0.feed_forward.w1.lora_B.weight": np.zeros((10240, 1), np.float16),
    }


def test_add_errors(small: Path, tmp_path: Path, fake_hub: FakeHub) -> None:
    data = write_safetensors(tmp_path / "a.safetensors", turbo_shaped_lora()).read_bytes()
    fake_hub.add_file("o/two", "a.safetensors", data)
    fake_hub.add_file("o/two", "b.safetensors", data)
    fake_hub.add_file("o/pickled", "model.ckpt", b"\x80\x04.")
    before = small.read_text()
    result = run("add", "o/two", "-c", str(small))
    assert result.exit_code == 1 and "several .safetensors files" in result.stderr and "a.safetensors" in result.stderr
    result = run("add", "o/pickled", "-c", str(small))
    assert result.exit_code == 1 and "refused" in result.stderr
    result = run("add", "o/pickled:model.ckpt", "-c", str(small))
    assert result.exit_code == 1 and "pickle" in result.stderr
    result = run("add", "not a repo", "-c", str(small))
    assert result.exit_code == 2
    result = run("add", "o/two:b.safetensors", "-c", str(small), "--id", "Bad Id")
    assert result.exit_code == 2
    assert small.read_text() == before
    result = run("add", "o/two:b.safetensors", "-c", str(small), "--id", "two-b")
    assert result.exit_code == 0, result.output
    assert "compatible (all 2 modules" in result.stdout
    assert load_catalogue(small).get("two-b").source.file == "b.safetensors"
    sdxl = write_safetensors(tmp_path / "s.safetensors", sdxl_tensors()).read_bytes()
    fake_hub.add_file("o/sdxl", "s.safetensors", sdxl)
    result = run("add", "o/sdxl", "-c", str(small))
    assert result.exit_code == 1 and "made for SDXL" in result.stderr


def test_registry_commands_do_not_import_heavy_libraries(small: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from lorascope.cli import app
        try:
            app(["registry", "list", "--catalogue", {str(small)!r}])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        heavy = [m for m in ("torch", "diffusers", "transformers", "open_clip", "pandas") if m in sys.modules]
        assert not heavy, heavy
    """)
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ink" in done.stdout


def test_remote_inspect_does_not_import_torch(tmp_path: Path, fake_hub: FakeHub) -> None:
    data = write_safetensors(tmp_path / "ink.safetensors", lora_tensors("ai-toolkit")).read_bytes()
    fake_hub.add_file("owner/ink", "ink.safetensors", data)
    code = textwrap.dedent("""
        import sys
        from lorascope.cli import app
        try:
            app(["registry", "inspect", "owner/ink:ink.safetensors", "--json"])
        except SystemExit:
            pass
        heavy = [m for m in ("torch", "diffusers", "transformers", "open_clip", "pandas") if m in sys.modules]
        assert not heavy, heavy
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["key_format"] == "ai-toolkit"


def test_console_script_runs(small: Path) -> None:
    exe = Path(sys.executable).with_name("lorascope")
    if not exe.exists():
        pytest.skip("console script not installed")
    done = subprocess.run([str(exe), "registry", "validate", str(small)], capture_output=True, text=True)
    assert done.returncode == 0 and "OK" in done.stdout


def test_add_refuses_an_alias_bomb_catalogue_before_asking_the_hub(tmp_path: Path, fake_hub: FakeHub) -> None:
    """`registry add` reads the catalogue within the same limits as every load: a 'billion
    laughs' file is one pointed error, not gigabytes of memory; nothing is written."""
    lines = ["version: 1", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "loras.yaml"
    bomb.write_text("\n".join(lines + ["loras: []", ""]))
    before = bomb.read_bytes()
    result = run("add", "someone/Anything", "-c", str(bomb))
    assert result.exit_code == 1
    assert f"{bomb}:" in result.stderr and "billion laughs" in result.stderr and "nothing was added" in result.stderr
    assert bomb.read_bytes() == before
