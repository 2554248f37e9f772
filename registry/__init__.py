"""Stage 1: the LoRA catalogue (`loras.yaml`), weight resolution, header-only inspection.

Nothing here imports torch/diffusers/open_clip: the CLI's registry commands must start fast.
"""

from lorascope.registry.catalogue import Catalogue, default_catalogue_path, load_catalogue
from lorascope.registry.models import HubSource, LoraEntry, PathSource, Provenance, ScaleSpec, UrlSource
from lorascope.registry.problems import CatalogueError, Problem
from lorascope.registry.prompts import apply_triggers
from lorascope.registry.references import LoraReferences, references

__all__ = [
    "Catalogue",
    "CatalogueError",
    "HubSource",
    "LoraEntry",
    "LoraReferences",
    "PathSource",
    "Problem",
    "Provenance",
    "ScaleSpec",
    "UrlSource",
    "apply_triggers",
    "default_catalogue_path",
    "load_catalogue",
    "references",
]
