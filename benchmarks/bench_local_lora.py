"""How much a LoRA scale change and a LoRA-set change cost next to one generation.

CPU part (default): the tiny random-weight Z-Image pipeline through the real provider
(`lorascope.harness.providers.local.DiffusersProvider`, diffusers + peft). Goal: a scale change under
1% of a generation.

GPU part (`--gpu`): the real-size Z-Image transformer config (dim 3840, 30 layers, 2 refiner
layers, 30 heads), real-size Qwen3-4B-shaped text encoder and FLUX-shaped VAE, all with
random bf16 weights (speed does not depend on the weight values, so nothing is downloaded),
1024x1024, 8 steps: seconds per image without a LoRA, with one rank-32 LoRA active, and the
cost of switching LoRAs (new file, already-loaded set, hotswap). Goal: under 1 s per image on
an H100 and under 5% LoRA overhead. `--gpu --smoke` runs the same code with tiny shapes, to
check the script on a machine without a GPU.

    python benchmarks/bench_local_lora.py            # CPU, tiny model
    python benchmarks/bench_local_lora.py --gpu      # real-size shapes on CUDA

Prints figures; results are recorded by hand in benchmarks/RESULTS-local-lora.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import machine  # noqa: E402  (benchmarks/ is the script's folder)
from lorascope.harness.lora_writer import write_lora  # noqa: E402
from lorascope.harness.models import GenerationRequest, LoraSpec  # noqa: E402
from lorascope.registry.zimage import ZIMAGE_TURBO_CONFIG  # noqa: E402


def median_s(fn: Callable[[], Any], repeat: int, sync: Callable[[], None] = lambda: None) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def versions() -> str:
    import diffusers
    import peft
    import torch

    return f"diffusers {diffusers.__version__}, peft {peft.__version__}, torch {torch.__version__}"


# ---------------------------------------------------------------------------------- CPU


def bench_cpu(size: int, steps: int, repeat: int) -> None:
    from lorascope.harness.providers.local import DiffusersProvider

    print(f"machine: {machine()}")
    print(f"software: {versions()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    provider = DiffusersProvider({"model": "tiny-random"})
    pipe = provider.load_pipeline()
    tmp = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    lora_a = write_lora(tmp / "a.safetensors", pipe.transformer, rank=4, seed=1)
    lora_b = write_lora(tmp / "b.safetensors", pipe.transformer, rank=4, seed=2)
    lora_c = write_lora(tmp / "c.safetensors", pipe.transformer, rank=4, seed=3)
    request = GenerationRequest(prompt="a lighthouse at dusk", width=size, height=size, seed=1, steps=steps)

    def run(req: GenerationRequest) -> None:
        asyncio.run(provider.generate(req))

    def with_(*pairs: tuple[Path, float]) -> GenerationRequest:
        return request.model_copy(update={"loras": tuple(LoraSpec(path=str(p), scale=s) for p, s in pairs)})

    run(request)  # warm-up (first call pays lazy torch initialisation)
    run(with_((lora_a, 1.0), (lora_b, 1.0)))
    # Interleaved, so load from other processes hits both the same way.
    base_times, lora_times = [], []
    for _ in range(repeat):
        base_times.append(median_s(lambda: run(request), 1))
        lora_times.append(median_s(lambda: run(with_((lora_a, 0.8))), 1))
    gen_base, gen_lora = statistics.median(base_times), statistics.median(lora_times)

    names = list(provider.loaded_adapters)
    scales = iter([0.1 + 0.01 * i for i in range(10_000)])
    raw_scale = median_s(lambda: pipe.set_adapters([names[0]], adapter_weights=[next(scales)]), repeat * 10)
    provider_scale = median_s(
        lambda: provider._activate(with_((lora_a, next(scales))).loras), repeat * 10
    )
    set_switch = median_s(
        lambda: (
            provider._activate(with_((lora_a, 0.8)).loras),
            provider._activate(with_((lora_b, 0.8)).loras),
        ),
        repeat * 10,
    ) / 2

    def fresh_load() -> None:
        provider.remove_loras([lora_c])
        provider._activate(with_((lora_c, 0.8)).loras)

    new_file = median_s(fresh_load, repeat)

    hot = DiffusersProvider({"model": "tiny-random", "hotswap": True, "hotswap_target_rank": 8})
    hot.load_pipeline()
    hot._activate(with_((lora_a, 0.8)).loras)
    toggle = iter([lora_b, lora_a] * 10_000)
    hotswap = median_s(lambda: hot._activate(with_((next(toggle), 0.8)).loras), repeat)

    print(f"\nCPU, tiny model, {size}x{size}, {steps} steps, median of {repeat}:")
    rows = [
        ("one generation, no LoRA", gen_base),
        ("one generation, one LoRA (rank 4)", gen_lora),
        ("scale change: pipe.set_adapters", raw_scale),
        ("scale change: provider activation", provider_scale),
        ("LoRA-set change, both already loaded", set_switch),
        ("LoRA-set change, new file (load_lora_weights)", new_file),
        ("LoRA-set change, hotswap into slot", hotswap),
    ]
    for label, seconds in rows:
        print(f"  {label:48s} {seconds * 1000:9.2f} ms  {100 * seconds / gen_lora:7.2f}% of a generation")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    ok = provider_scale < 0.01 * gen_lora
    print(f"\ngoal (scale change < 1% of a generation): {'met' if ok else 'NOT met'}")


# ---------------------------------------------------------------------------------- GPU

# the real transformer's shape, as the registry checks LoRAs against it (axes_lens: diffusers' default)
REAL_TRANSFORMER = {**ZIMAGE_TURBO_CONFIG, "axes_lens": [1024, 512, 512]}
REAL_TEXT = {  # Qwen3-4B's shape
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
}
REAL_VAE_BLOCKS = [128, 256, 512, 512]  # FLUX VAE


def build_random_pipeline(smoke: bool, device: str):
    """Real-size component shapes with random weights (`smoke`: the tiny shapes)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    from lorascope.harness.providers.tiny_zimage import TRANSFORMER_CONFIG, build_tokenizer

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = build_tokenizer()
    t_cfg = TRANSFORMER_CONFIG if smoke else REAL_TRANSFORMER
    text = (
        {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 2, "head_dim": 8}
        if smoke
        else REAL_TEXT
    )
    blocks = [32, 64] if smoke else REAL_VAE_BLOCKS
    torch.manual_seed(0)
    with torch.device(device):
        transformer = ZImageTransformer2DModel(**t_cfg).to(dtype)
        text_encoder = Qwen3Model(
            Qwen3Config(vocab_size=len(tokenizer), max_position_embeddings=1024,
                        pad_token_id=tokenizer.pad_token_id, **text)
        ).to(dtype)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * len(blocks),
            up_block_types=["UpDecoderBlock2D"] * len(blocks),
            block_out_channels=blocks, layers_per_block=1 if smoke else 2, latent_channels=16,
            norm_num_groups=32, scaling_factor=0.3611, shift_factor=0.1159,
        ).to(dtype)
        # Random init leaves these at zero/garbage depending on the diffusers version.
        with torch.no_grad():
            transformer.x_pad_token.normal_(0, 0.02)
            transformer.cap_pad_token.normal_(0, 0.02)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False),
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_gpu(smoke: bool, repeat: int, size: int, steps: int, rank: int) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda" and not smoke:
        sys.exit("--gpu needs CUDA (use --smoke to check the script on CPU)")
    print(f"machine: {machine()}")
    print(f"software: {versions()}")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    started = time.perf_counter()
    pipe = build_random_pipeline(smoke, device)
    sync()
    print(f"built random {'tiny' if smoke else 'real-size'} pipeline in {time.perf_counter() - started:.1f} s")
    if smoke:
        size, steps = 64, 2

    def generate() -> None:
        generator = torch.Generator(device=device).manual_seed(0)
        pipe(prompt="a lighthouse at dusk", height=size, width=size, num_inference_steps=steps,
             guidance_scale=0.0, generator=generator, output_type="pil")

    generate()  # warm-up (allocator, cuBLAS/cuDNN heuristics)
    generate()
    base = median_s(generate, repeat, sync)

    tmp = Path(tempfile.mkdtemp(prefix="bench-lora-gpu-"))
    targets = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
               "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
    files = [write_lora(tmp / f"l{i}.safetensors", pipe.transformer, rank=rank, seed=i, targets=targets)
             for i in range(3)]
    started = time.perf_counter()
    pipe.load_lora_weights(str(files[0]), adapter_name="a")
    sync()
    first_load = time.perf_counter() - started
    pipe.load_lora_weights(str(files[1]), adapter_name="b")
    pipe.set_adapters(["a"], adapter_weights=[0.8])
    generate()
    with_lora = median_s(generate, repeat, sync)
    scales = iter([0.1 + 0.01 * i for i in range(10_000)])
    scale_change = median_s(lambda: pipe.set_adapters(["a"], adapter_weights=[next(scales)]), repeat * 10, sync)
    toggle = iter(["b", "a"] * 10_000)
    set_change = median_s(lambda: pipe.set_adapters([next(toggle)], adapter_weights=[0.8]), repeat * 10, sync)

    # Hotswap: fixed slot, new weights in place (what a compiled transformer needs).
    pipe.unload_lora_weights()
    pipe.enable_lora_hotswap(target_rank=rank)
    pipe.load_lora_weights(str(files[0]), adapter_name="slot0")
    swap_files = iter([files[2], files[1]] * 100)
    hotswap = median_s(lambda: pipe.load_lora_weights(str(next(swap_files)), adapter_name="slot0", hotswap=True),
                       repeat, sync)

    label = "tiny shapes (smoke)" if smoke else "real-size Z-Image Turbo shapes, random bf16 weights"
    print(f"\n{label}, {size}x{size}, {steps} steps, median of {repeat}:")
    rows = [
        ("s/image, no LoRA", base),
        (f"s/image, one rank-{rank} LoRA active", with_lora),
        ("first LoRA load (load_lora_weights)", first_load),
        ("scale change (set_adapters)", scale_change),
        ("LoRA-set change, both loaded (set_adapters)", set_change),
        ("LoRA switch by hotswap (new file into slot)", hotswap),
    ]
    for name, seconds in rows:
        print(f"  {name:48s} {seconds:9.4f} s")
    print(f"  LoRA overhead: {100 * (with_lora - base) / base:+.1f}% (goal < 5%); "
          f"s/image {with_lora:.3f} (goal < 1 s on an H100)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="real-size shapes on CUDA")
    parser.add_argument("--smoke", action="store_true", help="with --gpu: tiny shapes, any device")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rank", type=int, default=32)
    args = parser.parse_args()
    if args.gpu:
        bench_gpu(args.smoke, args.repeat or 5, args.size or 1024, args.steps, args.rank)
    else:
        bench_cpu(args.size or 64, args.steps, args.repeat or 20)


if __name__ == "__main__":
    main()
