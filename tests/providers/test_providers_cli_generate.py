"""`lorascope generate` end to end against a loopback fal/Novita: what was sent, what the
user sees, exit codes."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from lorascope.cli import app
from tests.fakes import TEST_KEY as KEY
from tests.fakes.images import make_image

runner = CliRunner()


@pytest.fixture
def catalogue(tmp_path):
    path = tmp_path / "loras.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        loras:
          - id: coloring-book
            name: Coloring Book
            source:
              repo: renderartist/Coloring-Book-Z-Image-Turbo-LoRA
              file: Coloring_Book.safetensors
              revision: v1
            kind: style
            triggers: [c0l0ringb00k]
            scale: {recommended: 0.7, range: [0.5, 0.9]}
        """))
    return path


def invoke(*args):
    return runner.invoke(app, ["generate", *args], catch_exceptions=False)


def test_generate_with_a_catalogue_lora(fal, catalogue, tmp_path):
    out = tmp_path / "img" / "out.png"
    result = invoke("--provider", "fal", "--lora", "coloring-book", "--seed", "42", "--size", "768x512",
                    "--option", "acceleration=high", "--catalogue", str(catalogue), "a fox in a forest", "-o", str(out))
    assert result.exit_code == 0, result.output
    (submit,) = fal.hits("submit")
    assert submit.json["prompt"] == "c0l0ringb00k, a fox in a forest"
    assert submit.json["loras"] == [{
        "path": "https://huggingface.co/renderartist/Coloring-Book-Z-Image-Turbo-LoRA/resolve/v1/Coloring_Book.safetensors",
        "scale": 0.7}]
    assert submit.json["image_size"] == {"width": 768, "height": 512} and submit.json["seed"] == 42
    assert submit.json["acceleration"] == "high"
    assert out.read_bytes() == make_image("png", 768, 512, 0)
    assert "seed: 42" in result.output and "cost: $0.00334" in result.output and "estimated" in result.output
    assert KEY not in result.output


def test_every_validation_problem_at_once_and_nothing_sent(fal, catalogue, tmp_path):
    result = invoke("--provider", "fal", "--lora", "coloring-book:5", "--seed", "1", "--steps", "12",
                    "--option", "acceleration=max", "--option", "warp=9", "--catalogue", str(catalogue),
                    "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1
    for needle in ("steps 12", "scale 5", "acceleration='max'", "warp"):
        assert needle in result.output, needle
    assert fal.requests == []


def test_provider_error_is_one_line_kind_and_message(fal, tmp_path):
    fal.book.outcome = "fail"
    fal.book.fail_reason = "GPU fell over"
    result = invoke("--provider", "fal", "--seed", "1", "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1
    assert "task_failed: request " in result.output and "GPU fell over" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.png").exists()


def test_missing_key_names_the_variable(fake_factory, monkeypatch, tmp_path):
    monkeypatch.setenv("LORASCOPE_NOVITA_URL", fake_factory("novita").url)
    result = invoke("--provider", "novita", "--seed", "1", "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1 and "NOVITA_API_KEY" in result.output


def test_unknown_lora_and_pickle_are_reported_together(fal, catalogue, tmp_path):
    (tmp_path / "w.ckpt").write_bytes(b"x")
    result = invoke("--provider", "fal", "--lora", "colouring-book", "--lora", f"{tmp_path / 'w.ckpt'}:0.5",
                    "--seed", "1", "--catalogue", str(catalogue), "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1
    assert "did you mean 'coloring-book'" in result.output and "pickle" in result.output
    assert fal.requests == []


def test_lora_problems_and_request_problems_in_one_list(fal, catalogue, tmp_path):
    result = invoke("--provider", "fal", "--lora", "colouring-book", "--seed", "1", "--steps", "12",
                    "--config", "deadline_s=-1", "--catalogue", str(catalogue),
                    "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1
    for needle in ("did you mean 'coloring-book'", "--config deadline_s"):
        assert needle in result.output, needle
    assert fal.requests == []
    # with a valid config, the request's own problems join the LoRA's
    result = invoke("--provider", "fal", "--lora", "colouring-book", "--seed", "1", "--steps", "12",
                    "--catalogue", str(catalogue), "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 1
    assert "did you mean 'coloring-book'" in result.output and "steps 12" in result.output
    assert fal.requests == []


@pytest.mark.parametrize("args", [
    ["--size", "big"],
    ["--lora", "a", "--lora", "b", "--lora", "c", "--lora", "d"],
    ["--format", "gif"],
    ["--option", "novalue"],
])
def test_usage_errors_exit_2(fal, tmp_path, args):
    result = invoke("--provider", "fal", "--seed", "1", *args, "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 2
    assert fal.requests == []


def test_usage_errors_are_reported_together(fal, tmp_path):
    result = invoke("--provider", "fal", "--seed", "1", "--size", "big", "--format", "gif", "--option", "novalue",
                    "--lora", "a", "--lora", "b", "--lora", "c", "--lora", "d", "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 2
    for needle in ("'big' is not WIDTHxHEIGHT", "'gif' is not png, jpeg or webp", "'novalue' is not key=value",
                   "at most 3 LoRAs, got 4"):
        assert needle in result.output, needle
    assert fal.requests == []


def test_unknown_provider_is_a_usage_error(tmp_path):
    result = invoke("--provider", "nope", "--seed", "1", "x", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 2 and "unknown provider" in result.output


def test_providers_that_need_local_files_get_resolved_paths(monkeypatch, tmp_path):
    """The diffusers provider loads files: generate resolves entries with local_file=True."""
    import hashlib

    import lorascope.harness.providers as registry_of_providers
    from lorascope.harness.models import Cost, Estimate, GenerationResult, Timings
    from lorascope.harness.providers._images import to_image
    from lorascope.harness.providers.base import Provider
    from tests.providers.test_providers_lora_specs import write_lora

    sha = write_lora(tmp_path / "w.safetensors")
    (tmp_path / "loras.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        loras:
          - id: local-one
            name: Local
            source: {{path: w.safetensors, sha256: {sha}}}
            kind: style
            triggers: [l0cal]
            scale: {{recommended: 0.9, range: [0.0, 1.0]}}
        """))
    seen = []

    class LocalStub(Provider):
        name = "localstub"
        needs_local_files = True

        def validate(self, request):
            return []

        def endpoint(self, request):
            return "stub"

        def estimate(self, request):
            return Estimate(cost=Cost(usd=0.0, source="free"), seconds=0.0)

        async def generate(self, request, on_submitted=None):
            seen.append(request)
            image = to_image("localstub", make_image("png", 64, 64, 3))
            return GenerationResult(provider="localstub", images=[image], seed=request.seed,
                                    timings=Timings(total_s=0.01), cost=Cost(usd=0.0, source="free"))

    monkeypatch.setattr(registry_of_providers, "provider_class", lambda name: LocalStub)
    result = invoke("--provider", "localstub", "--lora", "local-one", "--seed", "5", "--catalogue",
                    str(tmp_path / "loras.yaml"), "a lamp", "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 0, result.output
    (request,) = seen
    assert request.prompt == "l0cal, a lamp"
    (spec,) = request.loras
    assert spec.scale == 0.9 and spec.path == str((tmp_path / "w.safetensors").resolve()) and spec.sha256 == sha
    assert hashlib.sha256((tmp_path / "o.png").read_bytes()).hexdigest() == hashlib.sha256(make_image("png", 64, 64, 3)).hexdigest()
