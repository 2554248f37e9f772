"""A tiny random-weight `ZImageControlNetModel` fitting the tiny Z-Image pipeline, built in
code, so the local ControlNet path (diffusers' `ZImageControlNetPipeline`, control image
encoded by the VAE, control blocks added to the transformer's) runs in tests and CI without
downloading alibaba-pai's Z-Image-Turbo-Fun-Controlnet-Union.

A real ControlNet's `before_proj`/`after_proj` start at zero (no effect until trained); here
every weight is seeded random, so the control image visibly changes the picture.
Import only when needed (torch, diffusers).
"""

from __future__ import annotations

import torch

from lorascope.harness.providers.tiny_zimage import TRANSFORMER_CONFIG

TINY_CONTROLNET = "tiny-random"
#: Bump when the recipe changes (it is part of the fingerprint of ControlNet requests).
TINY_CONTROLNET_REVISION = "tiny-controlnet-v1"
WEIGHT_SEED = 20240612


def build_tiny_controlnet(dtype: torch.dtype = torch.float32):
    from diffusers import ZImageControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        model = ZImageControlNetModel(
            control_layers_places=[0],
            control_refiner_layers_places=[0],
            control_in_dim=TRANSFORMER_CONFIG["in_channels"],
            add_control_noise_refiner="control_noise_refiner",
            all_patch_size=TRANSFORMER_CONFIG["all_patch_size"],
            all_f_patch_size=TRANSFORMER_CONFIG["all_f_patch_size"],
            dim=TRANSFORMER_CONFIG["dim"],
            n_refiner_layers=TRANSFORMER_CONFIG["n_refiner_layers"],
            n_heads=TRANSFORMER_CONFIG["n_heads"],
            n_kv_heads=TRANSFORMER_CONFIG["n_kv_heads"],
        )
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "before_proj" in name or "after_proj" in name:
                    param.copy_(torch.randn_like(param) * 0.2)
    return model.to(dtype=dtype).eval()


def write_single_file(path, dtype: torch.dtype = torch.float32):
    """The tiny ControlNet as ONE .safetensors file in alibaba-pai's release layout (the keys
    are diffusers' own: `control_all_x_embedder.2-1.*`, `control_noise_refiner.N.*`,
    `control_layers.N.*`), without its config, as the release ships."""
    from pathlib import Path

    from safetensors.torch import save_file

    model = build_tiny_controlnet(dtype)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    return Path(path)


def write_config(folder):
    """The tiny ControlNet's config.json in `folder`, as `hf download <repo> config.json
    --local-dir folder` leaves a real one (for the `controlnet_config` setting)."""
    from pathlib import Path

    folder = Path(folder)
    build_tiny_controlnet().save_config(str(folder))
    return folder
