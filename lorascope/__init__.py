"""lorascope: fixed-seed LoRA grids for Z-Image Turbo, scored, compared and reported."""

__version__ = "0.1.0"
