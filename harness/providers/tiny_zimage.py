"""A tiny random-weight Z-Image pipeline, built in code: the real `ZImagePipeline` class
with the real component classes, only very small. Tests, CI and the offline demo use it so
the local provider's code path (prompt encoding, LoRA loading through diffusers + peft,
scheduler, VAE decode) runs without downloading 6B parameters.

Everything is seeded: the same weights every time, on every machine with the same torch.
Import this module only when the pipeline is needed (it imports torch and diffusers).
"""

from __future__ import annotations

import string
from typing import Any

import torch

#: What `model: tiny-random` resolves to; recorded in results as the model id.
TINY_MODEL_ID = "tiny-random"
#: Bump when the recipe below changes, so stored results from an older recipe differ.
TINY_REVISION = "tiny-random-v1"
WEIGHT_SEED = 20240611
VAE_BLOCK_OUT_CHANNELS = [32, 64]
#: Height/width multiple: vae_scale_factor (2 ** (blocks - 1)) * 2, as ZImagePipeline checks.
SIZE_MULTIPLE = 2 ** (len(VAE_BLOCK_OUT_CHANNELS) - 1) * 2

TRANSFORMER_CONFIG: dict[str, Any] = {
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": 16,
    "dim": 32,
    "n_layers": 2,
    "n_refiner_layers": 1,
    "n_heads": 2,
    "n_kv_heads": 2,
    "cap_feat_dim": 16,
    "axes_dims": [8, 4, 4],
    "axes_lens": [256, 32, 32],
}

# Qwen3's chat markup, cut down to what ZImagePipeline._encode_prompt asks for
# (a user turn, the generation prompt, and the empty think block Qwen3 emits when thinking
# is disabled: `enable_thinking=True` leaves it out).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "[UNK]"]


def build_tokenizer():
    """A character-level `tokenizers` WordLevel model (so different prompts give different
    token ids, and so different images) wrapped in `PreTrainedTokenizerFast`."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in string.printable:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_pipeline(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The tiny `ZImagePipeline`; identical weights on every call (seeded CPU init)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        ZImagePipeline,
        ZImageTransformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = build_tokenizer()
    # Seed a private CPU generator state so building the pipeline does not disturb (or
    # depend on) the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        transformer = ZImageTransformer2DModel(**TRANSFORMER_CONFIG)
        # Older diffusers create these with torch.empty (garbage, sometimes NaN).
        with torch.no_grad():
            transformer.x_pad_token.copy_(torch.randn_like(transformer.x_pad_token) * 0.02)
            transformer.cap_pad_token.copy_(torch.randn_like(transformer.cap_pad_token) * 0.02)

        torch.manual_seed(WEIGHT_SEED + 1)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            block_out_channels=VAE_BLOCK_OUT_CHANNELS,
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=32,
            sample_size=32,
            scaling_factor=0.3611,
            shift_factor=0.1159,
        )

        torch.manual_seed(WEIGHT_SEED + 2)
        text_config = Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=TRANSFORMER_CONFIG["cap_feat_dim"],
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=1024,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = Qwen3Model(text_config)

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)
    pipe = ZImagePipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
