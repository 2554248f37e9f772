"""Stage 1: the LoRA catalogue (`loras.yaml`), weight resolution, header-only inspection."""

from registry.models import HubSource, LoraEntry, PathSource, Provenance, ScaleSpec, UrlSource

__all__ = ["HubSource", "LoraEntry", "PathSource", "Provenance", "ScaleSpec", "UrlSource"]
