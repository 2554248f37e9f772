"""`lorascope generate --provider diffusers --model tiny-random ...` end to end (in process)."""

from __future__ import annotations

import io

from typer.testing import CliRunner

from lorascope.cli import app


def _png(path):
    from PIL import Image

    image = Image.open(io.BytesIO(path.read_bytes()))
    image.load()
    return image


def test_generate_writes_a_64px_png_and_is_reproducible(tmp_path):
    runner = CliRunner()
    args = ["generate", "--provider", "diffusers", "--model", "tiny-random", "--seed", "5", "--size", "64x64"]
    first = runner.invoke(app, [*args, "a red barn", "-o", str(tmp_path / "a.png")])
    assert first.exit_code == 0, first.output
    image = _png(tmp_path / "a.png")
    assert (image.format, image.size) == ("PNG", (64, 64))
    assert "cost: $0.00000 (free" in first.output

    again = runner.invoke(app, [*args, "a red barn", "-o", str(tmp_path / "b.png")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_generate_takes_a_lora_file_with_scale(tmp_path, lora_dir):
    runner = CliRunner()
    args = ["generate", "--provider", "diffusers", "--model", "tiny-random", "--seed", "5", "--size", "64x64"]
    base = runner.invoke(app, [*args, "a red barn", "-o", str(tmp_path / "base.png")])
    styled = runner.invoke(
        app, [*args, "--lora", f"{lora_dir / 'style.kohya.safetensors'}:0.8", "a red barn", "-o", str(tmp_path / "lora.png")]
    )
    assert base.exit_code == 0 and styled.exit_code == 0, styled.output
    assert (tmp_path / "base.png").read_bytes() != (tmp_path / "lora.png").read_bytes()
    assert _png(tmp_path / "lora.png").size == (64, 64)


def test_generate_refuses_a_foreign_lora_and_writes_nothing(tmp_path, lora_dir):
    foreign = lora_dir / "sdxl_style.safetensors"
    result = CliRunner().invoke(
        app,
        ["generate", "--provider", "diffusers", "--model", "tiny-random", "--seed", "5", "--size", "64x64",
         "--lora", f"{foreign}:1.0", "a red barn", "-o", str(tmp_path / "x.png")],
    )
    assert result.exit_code == 1
    assert str(foreign) in result.output and "Z-Image" in result.output
    assert not (tmp_path / "x.png").exists()


def test_model_flag_is_refused_for_providers_without_a_model_setting(tmp_path):
    result = CliRunner().invoke(
        app, ["generate", "--provider", "fal", "--model", "x", "--seed", "1", "p", "-o", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 2
    assert "no model setting" in result.output


def test_generate_takes_a_catalogue_id_resolved_to_its_local_file(tmp_path, lora_dir):
    """`--lora ID:SCALE` with the local provider: the entry is resolved to its verified file
    and its trigger word is added, so the image is the file's at that scale with the
    triggered prompt."""
    catalogue = tmp_path / "loras.yaml"
    catalogue.write_text(
        "version: 1\nloras:\n  - id: tiny-style\n    name: Tiny style\n"
        f"    source: {{path: {lora_dir / 'style.diffusers.safetensors'}}}\n"
        "    kind: style\n    triggers: [st7le]\n    scale: {recommended: 1.0, range: [0.0, 2.0]}\n"
    )
    runner = CliRunner()
    args = ["generate", "--provider", "diffusers", "--model", "tiny-random", "--seed", "5", "--size", "64x64"]
    by_id = runner.invoke(app, [*args, "--catalogue", str(catalogue), "--lora", "tiny-style:0.8", "a red barn",
                                "-o", str(tmp_path / "id.png")])
    assert by_id.exit_code == 0, by_id.output
    by_file = runner.invoke(app, [*args, "--lora", f"{lora_dir / 'style.kohya.safetensors'}:0.8", "st7le, a red barn",
                                  "-o", str(tmp_path / "file.png")])
    assert by_file.exit_code == 0, by_file.output
    assert (tmp_path / "id.png").read_bytes() == (tmp_path / "file.png").read_bytes()
    unknown = runner.invoke(app, [*args, "--catalogue", str(catalogue), "--lora", "tiny-styel", "a red barn",
                                  "-o", str(tmp_path / "x.png")])
    assert unknown.exit_code != 0 and "tiny-styel" in unknown.output and not (tmp_path / "x.png").exists()
