"""`lorascope registry verify` against a loopback Hub answering huggingface_hub's own
`/api/models/{repo}/revision/{rev}?blobs=true` call: what it reports, its exit code, what
`--write` puts in the file (and keeps)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from registry_builders import FakeHub, lora_tensors, sha256_bytes, write_safetensors
from typer.testing import CliRunner

from lorascope.registry.catalogue import load_catalogue
from lorascope.registry.cli import app

runner = CliRunner()

CATALOGUE = """\
# verified catalogue: this comment must survive --write
version: 2
loras:
  # the good one
  - id: good
    name: Good
    source: {repo: o/good, file: good.safetensors}
    kind: style
    triggers: [g00d]
    scale: {recommended: 0.8, range: [0.6, 1.0]}
    tags: [demo]  # trailing comment
    provenance:
      source: {state: secondary, source: a list, url: "https://example.org/list"}
      kind: {state: unverified, source: lorascope}
      triggers:
        state: secondary
        source: a list
        url: "https://example.org/list"
        alternatives:
          - {value: [g00d style], source: another list, url: "https://example.org/other"}
      scale: {state: unverified, source: lorascope}
  - id: good-two
    name: Good two
    source: {repo: o/good, file: good2.safetensors}
    kind: style
    triggers: [g00d]
    scale: {recommended: 0.8, range: [0.6, 1.0]}
    provenance:
      source: {state: unverified, source: lorascope}
      kind: {state: unverified, source: lorascope}
      triggers: {state: unverified, source: lorascope}
      scale: {state: unverified, source: lorascope}
  - id: wrong-file
    name: Wrong file
    source: {repo: o/wf, file: wf_2000.safetensors}
    kind: style
    triggers: [wf]
    scale: {recommended: 0.8, range: [0.6, 1.0]}
    provenance:
      source: {state: unverified, source: a guess}
      kind: {state: unverified, source: lorascope}
      triggers: {state: unverified, source: lorascope}
      scale: {state: unverified, source: lorascope}
  - id: trig
    name: Changed trigger
    source: {repo: o/trig, file: trig.safetensors}
    kind: style
    triggers: [old style]
    scale: {recommended: 0.8, range: [0.6, 1.0]}
    provenance:
      source: {state: unverified, source: lorascope}
      kind: {state: unverified, source: lorascope}
      triggers: {state: secondary, source: a list, url: "https://example.org/list"}
      scale: {state: unverified, source: lorascope}
  - id: gone
    name: Gone
    source: {repo: o/gone, file: gone.safetensors}
    kind: style
    triggers: []
    scale: {recommended: 0.8, range: [0.6, 1.0]}
    provenance:
      source: {state: unverified, source: lorascope}
      kind: {state: unverified, source: lorascope}
      triggers: {state: unverified, source: lorascope}
      scale: {state: unverified, source: lorascope}
  - id: sdxl
    name: Not Z-Image
    source: {repo: o/sdxl, file: sdxl.safetensors}
    kind: style
    triggers: []
    scale: {recommended: 0.8, range: [0.6, 1.0]}
    provenance:
      source: {state: unverified, source: lorascope}
      kind: {state: unverified, source: lorascope}
      triggers: {state: unverified, source: lorascope}
      scale: {state: unverified, source: lorascope}
"""
ZIMAGE = "Tongyi-MAI/Z-Image-Turbo"


@pytest.fixture
def hub(fake_hub: FakeHub, tmp_path: Path) -> dict:
    data = write_safetensors(tmp_path / "x.safetensors", lora_tensors("ai-toolkit")).read_bytes()
    data2 = data + b" "  # another file, another sha256 (contents need not parse: nothing reads them)
    card = {"instance_prompt": "g00d", "base_model": ZIMAGE, "license": "apache-2.0"}
    commit = fake_hub.add_file("o/good", "good.safetensors", data, card=card)
    fake_hub.add_file("o/good", "good2.safetensors", data2, card=card)
    fake_hub.add_file("o/wf", "wf_1250.safetensors", data, card={"base_model": ZIMAGE})
    fake_hub.add_file("o/wf", "wf_1500.safetensors", data, card={"base_model": ZIMAGE})
    fake_hub.add_file("o/trig", "trig.safetensors", data,
                      card={"instance_prompt": "n3w style", "base_model": [ZIMAGE]})
    fake_hub.add_file("o/sdxl", "sdxl.safetensors", data,
                      card={"base_model": "stabilityai/stable-diffusion-xl-base-1.0"})

    def repo_not_found(handler) -> bool:  # what the Hub answers for a repo that is gone
        if not handler.path.startswith("/api/models/o/gone"):
            return False
        body = b'{"error": "Repository not found"}'
        handler.send_response(401)
        handler.send_header("X-Error-Code", "RepoNotFound")
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return True

    fake_hub.server.handler.append(repo_not_found)
    return {"commit": commit, "sha": sha256_bytes(data), "sha2": sha256_bytes(data2), "hub": fake_hub}


@pytest.fixture
def cat(tmp_path: Path) -> Path:
    path = tmp_path / "loras.yaml"
    path.write_text(CATALOGUE, encoding="utf-8")
    return path


def info_requests(fake_hub: FakeHub) -> list[str]:
    return [r["path"] for r in fake_hub.server.requests if r["path"].startswith("/api/models/")]


def verify_json(cat: Path, *args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["verify", "-c", str(cat), "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def checks(report: dict) -> dict[str, dict]:
    return {c["field"]: c for c in report["checks"]}


def test_all_confirmed_with_one_request_per_repo(cat: Path, hub: dict) -> None:
    code, out = verify_json(cat, "good", "good-two")
    assert code == 0
    good, two = out["reports"]
    c = checks(good)
    assert c["source.file"]["status"] == "confirmed" and good["sha256"] == hub["sha"]
    assert good["commit"] == hub["commit"] and two["sha256"] == hub["sha2"]
    assert c["triggers"]["status"] == "confirmed" and c["triggers"]["theirs"] == ["g00d"]
    assert c["license"]["status"] == "new" and c["license"]["theirs"] == "apache-2.0"
    assert c["base_model"]["status"] == "new" and c["base_model"]["theirs"] == ZIMAGE
    # two entries, one repo: one model-info request, with the files' metadata asked for
    assert info_requests(hub["hub"]) == ["/api/models/o/good/revision/main?blobs=true"]


def test_each_problem_reported_per_entry_and_field_exit_1(cat: Path, hub: dict) -> None:
    result = runner.invoke(app, ["verify", "-c", str(cat)], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    text = result.stdout
    assert "source.file      missing — not in o/wf@" in text
    assert "its .safetensors files: wf_1250.safetensors, wf_1500.safetensors" in text
    assert "triggers         differs ours [old style] vs the repo's [n3w style]" in text
    assert "source           gone — o/gone does not exist on the Hub" in text
    assert "base_model       not-zimage — the card's base_model is not Z-Image" in text
    assert "6 entries checked" in text and "4 with problems (differs, gone, missing, not-zimage)" in text
    assert len(info_requests(hub["hub"])) == 5  # five repos, six entries
    code, out = verify_json(cat)
    by_id = {r["id"]: r for r in out["reports"]}
    assert checks(by_id["wrong-file"])["source.file"]["theirs"] == ["wf_1250.safetensors", "wf_1500.safetensors"]
    assert checks(by_id["trig"])["triggers"]["ours"] == ["old style"]
    assert checks(by_id["sdxl"])["base_model"]["theirs"] == ["stabilityai/stable-diffusion-xl-base-1.0"]
    assert checks(by_id["gone"])["source"]["status"] == "gone"


def test_write_pins_confirms_and_keeps_comments_and_order(cat: Path, hub: dict) -> None:
    before = cat.read_text()
    result = runner.invoke(app, ["verify", "-c", str(cat), "--write"], env={"COLUMNS": "250"})
    assert result.exit_code == 1  # the other entries still have problems; good is written anyway
    after = cat.read_text()
    assert after.startswith("# verified catalogue: this comment must survive --write\nversion: 2\n")
    assert "  # the good one\n" in after and "tags: [demo]  # trailing comment" in after
    assert [line.split("id: ")[1] for line in after.splitlines() if "- id: " in line] == [
        "good", "good-two", "wrong-file", "trig", "gone", "sdxl"]
    loaded = load_catalogue(cat)
    good = loaded.get("good")
    assert good.source.revision == hub["commit"] and good.source.sha256 == hub["sha"]
    assert good.state("source") == "confirmed" and good.state("triggers") == "confirmed"
    # what other sources said is kept when a fact is confirmed
    assert [a.value for a in good.provenance["triggers"].alternatives] == [["g00d style"]]
    assert good.provenance["source"].url.endswith(f"/o/good/blob/{hub['commit']}/good.safetensors")
    assert good.license == "apache-2.0" and good.state("license") == "confirmed"
    assert good.base_model == ZIMAGE and good.state("base_model") == "confirmed"
    assert good.state("kind") == "unverified" and good.state("scale") == "unverified"  # the Hub says nothing of them
    # a differing trigger keeps ours and records the repo's beside it
    trig = loaded.get("trig")
    assert trig.triggers == ["old style"] and trig.state("triggers") == "secondary"
    assert [a.value for a in trig.provenance["triggers"].alternatives] == [["n3w style"]]
    # a wrong file name is not "fixed" by guessing among several candidates
    assert loaded.get("wrong-file").source.file == "wf_2000.safetensors"
    assert loaded.get("gone").source.revision is None
    # the good entries now verify clean and pinned, and a second --write changes nothing
    code, out = verify_json(cat, "good", "good-two")
    assert code == 0 and checks(out["reports"][0])["source.revision"]["status"] == "confirmed"
    assert checks(out["reports"][0])["license"]["status"] == "confirmed"
    pinned = cat.read_text()
    code, out = verify_json(cat, "good", "good-two", "--write")
    assert code == 0 and out["written"] == 0 and cat.read_text() == pinned
    assert before != pinned


def test_write_fills_an_unknown_file_when_the_repo_has_one(tmp_path: Path, hub: dict) -> None:
    path = tmp_path / "loras.yaml"
    path.write_text(CATALOGUE.split("  - id: good-two")[0].replace(
        "source: {repo: o/good, file: good.safetensors}", "source: {repo: o/trig}"), encoding="utf-8")
    assert load_catalogue(path).get("good").source.file is None
    code, out = verify_json(path)
    assert code == 1 and checks(out["reports"][0])["source.file"]["status"] == "missing"
    assert "--write takes it" in checks(out["reports"][0])["source.file"]["detail"]
    runner.invoke(app, ["verify", "-c", str(path), "--write"])
    entry = load_catalogue(path).get("good")
    assert entry.source.file == "trig.safetensors" and entry.source.sha256 == hub["sha"]


def test_write_keeps_a_version_1_catalogue_in_version_1(tmp_path: Path, hub: dict) -> None:
    path = tmp_path / "loras.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        loras:
          - id: good
            name: Good
            source: {repo: o/good, file: good.safetensors}
            kind: style
            triggers: [g00d]
            scale: {recommended: 0.8, range: [0.6, 1.0]}
            provenance:
              triggers: {source: a list, confirmed: false}
        """), encoding="utf-8")
    result = runner.invoke(app, ["verify", "-c", str(path), "--write"])
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert "state:" not in text and "confirmed: true" in text
    entry = load_catalogue(path).get("good")
    assert entry.is_confirmed("triggers") and entry.is_confirmed("source") and entry.source.sha256 == hub["sha"]


def test_offline_says_it_needs_the_hub_in_one_line(cat: Path, hub: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = cat.read_text()
    result = runner.invoke(app, ["verify", "-c", str(cat), "--write"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs" not in lines[0] or "Hugging Face Hub" in lines[0]
    assert "HF_HUB_OFFLINE is set" in lines[0]
    assert info_requests(hub["hub"]) == [] and cat.read_text() == before


def test_unreachable_hub_is_one_line(cat: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    result = runner.invoke(app, ["verify", "-c", str(cat), "good"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be reached" in lines[0] and "Traceback" not in result.output


def test_token_is_sent_and_never_printed(cat: Path, hub: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    result = runner.invoke(app, ["verify", "-c", str(cat)])
    assert "hf_secret_token_value" not in result.output
    sent = [r["headers"].get("authorization") for r in hub["hub"].server.requests if r["path"].startswith("/api/models/")]
    assert sent and all(h == "Bearer hf_secret_token_value" for h in sent)


def test_add_writes_a_version_2_entry_into_a_version_2_catalogue(cat: Path, hub: dict) -> None:
    result = runner.invoke(app, ["add", "o/trig", "-c", str(cat), "--force", "--id", "added"])
    assert result.exit_code == 0, result.output
    added = load_catalogue(cat).get("added")
    assert added.state("source") == "confirmed" and added.provenance["source"].url.endswith(
        f"/o/trig/blob/{added.source.revision}/trig.safetensors")
    assert added.state("kind") == "unverified" and added.state("scale") == "unverified"
    assert "confirmed: " not in cat.read_text().split("- id: added")[1]
